//! Micro-benchmark of the line decoder (`cldpd::runtime::LineDecoder`), the
//! byte scan every container output goes through: 1,000,000 lines of 80
//! bytes fed in 64 KiB reads (as the Docker backend reads its pipes).
//! Reports ns per line and MB/s, median of `--runs`.
//!
//! ```text
//! cargo run --release --example bench_lines -- --runs 9
//! ```

#[path = "bench/common.rs"]
mod common;

use std::time::Instant;

use cldpd::runtime::{LineDecoder, DEFAULT_LINE_CAP};
use cldpd::OutputStream;
use common::*;

fn main() {
    let args = Args::parse();
    let lines: usize = args.get("lines", 1_000_000);
    let width: usize = args.get("width", 80);
    let runs: usize = args.get("runs", 9);
    println!("bench_lines: {lines} lines of {width} B through LineDecoder in 64 KiB reads");
    print_machine();
    print_command(
        "bench_lines",
        &[
            ("lines", lines.to_string()),
            ("width", width.to_string()),
            ("runs", runs.to_string()),
        ],
    );
    let mut input = Vec::with_capacity(lines * (width + 1));
    for i in 0..lines {
        let start = input.len();
        input.extend_from_slice(format!("out {i} ").as_bytes());
        input.resize(start + width, b'.');
        input.push(b'\n');
    }
    let mut ns = Vec::new();
    let mut mbs = Vec::new();
    for run in 0..runs {
        let mut d = LineDecoder::new(OutputStream::Stdout, DEFAULT_LINE_CAP);
        let mut count = 0usize;
        let mut out = Vec::with_capacity(1024);
        let t = Instant::now();
        for chunk in input.chunks(64 * 1024) {
            d.push(chunk, &mut out);
            count += out.len();
            out.clear();
        }
        d.finish(&mut out);
        count += out.len();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(count, lines);
        println!(
            "run {}: {:.1} ns/line, {:.0} MB/s",
            run + 1,
            secs * 1e9 / lines as f64,
            input.len() as f64 / secs / 1e6
        );
        ns.push(secs * 1e9 / lines as f64);
        mbs.push(input.len() as f64 / secs / 1e6);
    }
    println!("result: {}", spread(&ns, "ns/line", 1));
    println!("result: {}", spread(&mbs, "MB/s", 0));
}
