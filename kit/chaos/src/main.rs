//! `butter-chaos`: the chaos driver (also `butter-kit chaos`); the command line is
//! [`butter_chaos::cli`].

use clap::Parser;

/// Chaos driver for Butter's compose testbed: faults through the Docker Engine API and
/// nftables, seeded and logged, and a survival check that exits non-zero on any lost item.
#[derive(Parser, Debug)]
#[command(name = "butter-chaos", version, about)]
struct Command {
    #[command(flatten)]
    cli: butter_chaos::cli::Cli,
}

fn main() {
    std::process::exit(butter_chaos::cli::main(
        Command::parse().cli,
        "butter-chaos",
    ));
}
