use anyhow::Context;
use clap::{Parser, Subcommand};
use etl_core::config::{Env, SETTINGS_HELP, load_dotenv};
use etl_core::db::DatabaseSettings;
use etl_core::telemetry::Telemetry;

use cmd_processor::{Application, ProcessorSettings};

/// Consumes FileExtractSuccess, validates each stored company file and
/// loads it into PostgreSQL, emitting FileLoaded or ValidationError.
#[derive(Parser)]
#[command(
    name = "cmd-processor",
    version,
    help_template = "usage: {usage}\n\n{about}\n\n{all-args}{after-help}",
    after_help = SETTINGS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume and load until SIGTERM or SIGINT (the default)
    Run,
    /// Apply pending database migrations and exit
    Migrate,
    /// Revert the newest STEPS migrations and exit
    Rollback {
        #[arg(default_value_t = 1)]
        steps: usize,
    },
    /// Send the dead letters there are now back to their topics and exit
    Redrive,
    /// Have a stored file processed again, whatever its ledger status, and exit
    Replay {
        /// The file's id, as the api answered it (`files[].file_id`)
        file_id: String,
        /// Needed only for a file the ledger does not know
        company: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    etl_core::exit_status(
        "cmd-processor",
        run_command(cli.command.unwrap_or(Command::Run)),
    )
}

#[tokio::main]
async fn run_command(command: Command) -> anyhow::Result<()> {
    load_dotenv();
    let env = Env::process();
    match command {
        Command::Run => run(&env).await,
        Command::Migrate => {
            let pool = database(&env)?;
            etl_core::db::migrate(&pool)
                .await
                .context("applying migrations failed")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Rollback { steps } => {
            let pool = database(&env)?;
            etl_core::db::rollback(&pool, steps)
                .await
                .context("rolling back failed")?;
            println!("rolled back {steps} migration(s)");
            Ok(())
        }
        Command::Redrive => {
            let settings = settings(&env)?;
            let done = cmd_processor::redrive::redrive(&settings)
                .await
                .context("re-driving dead letters failed")?;
            println!(
                "re-drove {} dead letter(s) to their topics; {} left in place (not re-drivable)",
                done.records, done.skipped
            );
            Ok(())
        }
        Command::Replay { file_id, company } => {
            let (settings, telemetry) = traced(&env)?;
            let done = cmd_processor::replay::replay(&settings, &file_id, company.as_deref()).await;
            // The replay's spans are posted before the process ends.
            telemetry.shutdown().await;
            let done = done.context("replay failed")?;
            let trace = done
                .trace_id
                .map(|id| format!(" and trace id {id}"))
                .unwrap_or_default();
            println!(
                "replayed file {} of {} (ledger status before: {}); follow it with request id {}{trace}",
                done.file_id,
                done.company.as_str(),
                done.previous_status.as_deref().unwrap_or("none"),
                done.request_id.as_str()
            );
            Ok(())
        }
    }
}

/// The settings of `redrive`, which logs and exports no spans: a re-driven
/// record keeps its headers, so its handling joins its original trace.
fn settings(env: &Env) -> anyhow::Result<ProcessorSettings> {
    let settings = ProcessorSettings::from_env(env).context("invalid configuration")?;
    etl_core::telemetry::init(settings.log_format, None);
    Ok(settings)
}

fn database(env: &Env) -> anyhow::Result<sqlx::PgPool> {
    let settings = DatabaseSettings::from_env(env).context("invalid configuration")?;
    Ok(etl_core::db::pool(&settings)?)
}

/// The settings, with logging and (when configured) trace export started.
fn traced(env: &Env) -> anyhow::Result<(ProcessorSettings, Telemetry)> {
    let settings = ProcessorSettings::from_env(env).context("invalid configuration")?;
    let telemetry =
        Telemetry::start(settings.log_format, &settings.traces).context("cannot export traces")?;
    Ok((settings, telemetry))
}

async fn run(env: &Env) -> anyhow::Result<()> {
    let (settings, telemetry) = traced(env)?;
    let app = Application::build(settings)
        .await
        .context("failed to start cmd-processor")?;
    tracing::info!(addr = %app.local_addr(), "cmd-processor started");
    app.run_until_stopped(etl_core::shutdown::on_signal())
        .await
        .context("cmd-processor server failed")?;
    tracing::info!("cmd-processor stopped");
    telemetry.shutdown().await;
    Ok(())
}
