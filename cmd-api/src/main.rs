use anyhow::Context;
use etl_core::config::{Env, help, help_requested, load_dotenv};
use etl_core::telemetry::Telemetry;

use cmd_api::{ApiSettings, Application};

fn main() -> std::process::ExitCode {
    etl_core::exit_status("cmd-api", run_command())
}

#[tokio::main]
async fn run_command() -> anyhow::Result<()> {
    if help_requested() {
        print!(
            "{}",
            help("usage: cmd-api  (serves until SIGTERM or SIGINT)")
        );
        return Ok(());
    }
    load_dotenv();
    let settings = ApiSettings::from_env(&Env::process()).context("invalid configuration")?;
    let telemetry =
        Telemetry::start(settings.log_format, &settings.traces).context("cannot export traces")?;
    let grace = settings.shutdown_grace;
    let app = Application::build(settings)
        .await
        .context("failed to start cmd-api")?;
    tracing::info!(addr = %app.local_addr(), "cmd-api listening");
    app.run_until_stopped(etl_core::shutdown::on_signal(), grace)
        .await
        .context("cmd-api server failed")?;
    tracing::info!("cmd-api stopped");
    telemetry.shutdown().await;
    Ok(())
}
