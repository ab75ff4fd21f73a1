use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tasknode::cli::Cli::parse();
    match tasknode::run(cli) {
        Ok(code) => code,
        Err(err) => tasknode::report(&err),
    }
}
