//! `cargo xtask <task>`: the project's tasks.
//!
//! ```text
//! cargo xtask bench [--quick] [--only GROUP]
//! ```
//!
//! `bench` runs the criterion benches of `benches/` and writes `target/bench/summary.json`:
//! one object per benchmark, `{"id", "median_ns", "baseline", "ratio"}`, where `baseline` is
//! the group's baseline (declared in `benches/baselines.toml`) and `ratio` is
//! `median_ns / baseline median_ns` (both `null` for the baseline itself and for groups
//! without one).
#![allow(clippy::print_stdout)]

mod bench;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "bench" => bench::run(&bench::Options::parse(&rest)?),
        "" | "help" | "--help" | "-h" => {
            println!("usage: cargo xtask bench [--quick] [--only GROUP]");
            Ok(())
        }
        other => bail!("unknown task `{other}` (try `cargo xtask help`)"),
    }
    .with_context(|| format!("cargo xtask {task}"))
}
