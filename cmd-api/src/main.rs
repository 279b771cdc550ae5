use anyhow::Context;
use etl_core::config::{Env, load_dotenv};

use cmd_api::{ApiSettings, Application};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    load_dotenv();
    let settings = ApiSettings::from_env(&Env::process()).context("invalid configuration")?;
    etl_core::telemetry::init(settings.log_format);
    let grace = settings.shutdown_grace;
    let app = Application::build(settings)
        .await
        .context("failed to start cmd-api")?;
    tracing::info!(addr = %app.local_addr(), "cmd-api listening");
    app.run_until_stopped(etl_core::shutdown::on_signal(), grace)
        .await
        .context("cmd-api server failed")?;
    tracing::info!("cmd-api stopped");
    Ok(())
}
