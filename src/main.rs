//! `cldpd`, the command-line tool: a thin layer over the `cldpd` library.
//! Everything lives in [`cli`]; this file only runs it and exits with its
//! code.

mod cli;

/// mimalloc, with the opt-in feature `mimalloc` (measured, and not the
/// default: see `BENCHMARKS.md`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(cli::main());
}
