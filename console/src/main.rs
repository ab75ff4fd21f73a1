use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tasknode_console::cli::Cli::parse();
    tasknode_console::init_tracing();
    match tasknode_console::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => tasknode_console::report(&err),
    }
}
