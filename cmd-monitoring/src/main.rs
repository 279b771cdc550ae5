use anyhow::Context;
use etl_core::config::{Env, help, help_requested, load_dotenv};
use etl_core::telemetry::Telemetry;

use cmd_monitoring::{Application, MonitoringSettings};

fn main() -> std::process::ExitCode {
    etl_core::exit_status("cmd-monitoring", run_command())
}

#[tokio::main]
async fn run_command() -> anyhow::Result<()> {
    if help_requested() {
        print!(
            "{}",
            help("usage: cmd-monitoring  (serves until SIGTERM or SIGINT)")
        );
        return Ok(());
    }
    load_dotenv();
    let settings =
        MonitoringSettings::from_env(&Env::process()).context("invalid configuration")?;
    let telemetry =
        Telemetry::start(settings.log_format, &settings.traces).context("cannot export traces")?;
    let app = Application::build(settings)
        .await
        .context("failed to start cmd-monitoring")?;
    tracing::info!(addr = %app.local_addr(), "cmd-monitoring started");
    app.run_until_stopped(etl_core::shutdown::on_signal())
        .await
        .context("cmd-monitoring server failed")?;
    tracing::info!("cmd-monitoring stopped");
    telemetry.shutdown().await;
    Ok(())
}
