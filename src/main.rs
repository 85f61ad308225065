use asc_webhook_operator::cli::{Cli, Command};
use asc_webhook_operator::{doctor, memory, operator, replay, resources::crds, send, telemetry};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before the runtime starts its threads (only without jemalloc: see `memory`).
    memory::limit_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
        .block_on(cli_main())
}

async fn cli_main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds(args) => report(crds::print_or_write(args.out_dir.as_deref())),
        Command::Send(args) => match send::send(&args).await {
            Ok(outcome) => {
                println!("{} {}", outcome.status, outcome.body);
                if (200..300).contains(&outcome.status) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => report(Err(e)),
        },
        Command::Replay(args) => match replay::run(&args).await {
            Ok(outcome) => {
                println!("{outcome}");
                ExitCode::SUCCESS
            }
            Err(e) => report(Err(e)),
        },
        Command::Doctor(args) => match doctor::run(&args).await {
            Ok(report) => {
                print!("{report}");
                if report.passed() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => report(Err(e)),
        },
        Command::Run(args) => {
            telemetry::init(args.log_format, &args.log_filter);
            report(operator::run(*args).await)
        }
    }
}

fn report<E: std::error::Error>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", asc_webhook_operator::text::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its settings from this symbol before `main` (see [`memory::JEMALLOC_SETTINGS`]);
/// defined in the binary so the linker always keeps it. `MALLOC_CONF`-style overrides still apply
/// through the `_RJEM_MALLOC_CONF` environment variable.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: memory::Settings = memory::Settings::JEMALLOC;
