//! The `datavet` binary: parse flags, run, print the error chain, exit with a code schedulers read.

use std::process::ExitCode;

use clap::Parser;
use datavet::cli::{Cli, ExitStatus};

fn main() -> ExitCode {
    let cli = Cli::parse();
    datavet::cli::init_logging(&cli);
    let json = cli.log_format == datavet::cli::LogFormat::Json;
    let err = match datavet::cli::run(cli) {
        Ok(status) => return status.into(),
        Err(e) => anyhow::Error::from(e),
    };
    // `datavet ... | head` closing the pipe is no failure.
    if err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    }) {
        return ExitCode::SUCCESS;
    }
    // Each cause once: our messages already quote the I/O error they wrap.
    let mut message = err.to_string();
    for cause in err.chain().skip(1).map(|c| c.to_string()) {
        if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    datavet::cli::print_error(&message, json);
    ExitStatus::Error.into()
}
