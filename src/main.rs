//! `cldpd`, the command-line tool: a thin layer over the `cldpd` library.
//! Everything lives in [`cli`]; this file only runs it and exits with its
//! code.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
