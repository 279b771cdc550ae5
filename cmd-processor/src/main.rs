use anyhow::Context;
use etl_core::config::{Env, help, help_requested, load_dotenv};
use etl_core::db::DatabaseSettings;

use cmd_processor::{Application, ProcessorSettings};

const USAGE: &str =
    "usage: cmd-processor [run | migrate | rollback [STEPS] | redrive | replay FILE_ID [COMPANY]]
  run       consume and load until SIGTERM or SIGINT (the default)
  migrate   apply pending database migrations and exit
  rollback  revert the last STEPS migrations (default 1) and exit
  redrive   send the dead letters there are now back to their topics and exit
  replay    have a stored file processed again, whatever its ledger status, and exit
            (COMPANY is needed only for a file the ledger does not know)";

fn main() -> std::process::ExitCode {
    etl_core::exit_status("cmd-processor", run_command())
}

#[tokio::main]
async fn run_command() -> anyhow::Result<()> {
    if help_requested() {
        print!("{}", help(USAGE));
        return Ok(());
    }
    load_dotenv();
    let env = Env::process();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["run"] => run(&env).await,
        ["migrate"] => {
            let pool = etl_core::db::pool(
                &DatabaseSettings::from_env(&env).context("invalid configuration")?,
            )?;
            etl_core::db::migrate(&pool)
                .await
                .context("applying migrations failed")?;
            println!("migrations applied");
            Ok(())
        }
        ["rollback", rest @ ..] => {
            let steps = match rest {
                [] => 1,
                [n] => n
                    .parse()
                    .with_context(|| format!("STEPS must be a number\n{USAGE}"))?,
                _ => anyhow::bail!(USAGE),
            };
            let pool = etl_core::db::pool(
                &DatabaseSettings::from_env(&env).context("invalid configuration")?,
            )?;
            etl_core::db::rollback(&pool, steps)
                .await
                .context("rolling back failed")?;
            println!("rolled back {steps} migration(s)");
            Ok(())
        }
        ["redrive"] => {
            let settings = ProcessorSettings::from_env(&env).context("invalid configuration")?;
            etl_core::telemetry::init(settings.log_format);
            let done = cmd_processor::redrive::redrive(&settings)
                .await
                .context("re-driving dead letters failed")?;
            println!(
                "re-drove {} dead letter(s) to their topics; {} left in place (not re-drivable)",
                done.records, done.skipped
            );
            Ok(())
        }
        ["replay", file_id, company @ ..] if company.len() <= 1 => {
            let settings = ProcessorSettings::from_env(&env).context("invalid configuration")?;
            etl_core::telemetry::init(settings.log_format);
            let done = cmd_processor::replay::replay(&settings, file_id, company.first().copied())
                .await
                .context("replay failed")?;
            println!(
                "replayed file {} of {} (ledger status before: {}); follow it with request id {}",
                done.file_id,
                done.company.as_str(),
                done.previous_status.as_deref().unwrap_or("none"),
                done.request_id.as_str()
            );
            Ok(())
        }
        _ => anyhow::bail!(USAGE),
    }
}

async fn run(env: &Env) -> anyhow::Result<()> {
    let settings = ProcessorSettings::from_env(env).context("invalid configuration")?;
    etl_core::telemetry::init(settings.log_format);
    let app = Application::build(settings)
        .await
        .context("failed to start cmd-processor")?;
    tracing::info!(addr = %app.local_addr(), "cmd-processor started");
    app.run_until_stopped(etl_core::shutdown::on_signal())
        .await
        .context("cmd-processor server failed")?;
    tracing::info!("cmd-processor stopped");
    Ok(())
}
