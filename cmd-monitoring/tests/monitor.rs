//! cmd-monitoring against the real broker.

use etl_testkit::{OwnServer, Service, TestEnv, local_listener, readiness, readiness_follows};

use cmd_monitoring::{Application, MonitoringSettings};

async fn start(env: &TestEnv, extra: &[(&str, &str)]) -> Service {
    let settings = MonitoringSettings::from_env(&env.env(extra)).expect("settings");
    let app = Application::build_with_listener(settings, local_listener().await)
        .await
        .expect("monitoring starts");
    Service::spawn(app.local_addr(), |stop| app.run_until_stopped(stop)).await
}

#[tokio::test]
async fn readiness_names_the_broker_while_it_is_down() {
    let env = TestEnv::new().await;
    let mut broker = OwnServer::tansu(&env.id).await;
    let brokers = broker.brokers();
    let monitor = start(
        &env,
        &[
            ("KAFKA_BROKERS", &brokers),
            ("READINESS_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let (status, report) = readiness(&monitor).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["checks"]["kafka"]["ok"], true, "{report}");

    readiness_follows(&monitor, &mut broker, OwnServer::kill, "kafka", async || {}).await;
}
