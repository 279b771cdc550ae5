//! Broker failures on a Kafka cluster of the test's own, as production runs
//! it: three nodes, replication factor 3, `min.insync.replicas` 2. The api
//! and the processor run as real processes under a steady load of careful
//! clients (a 503 is posted again). Checked as a user would: every import
//! the api acknowledged is loaded exactly once and announced with one event
//! id, and no answer was anything but 202 or 503 `dependency_unavailable`.

use std::time::Duration;

use etl_testkit::{
    LoadReport, OwnKafka, ServiceProcess, SteadyLoad, TestEnv, assert_loaded_exactly_once,
    eventually, generated_company, post_import, readiness,
};

/// Loading takes a while on a 2-core machine that also runs three brokers.
const LOAD_DEADLINE: Duration = Duration::from_secs(300);
/// How many imports must go through while a broker is away.
const WHILE_DOWN: usize = 100;

struct Pipeline {
    env: TestEnv,
    kafka: OwnKafka,
    api: ServiceProcess,
    _processor: ServiceProcess,
}

async fn pipeline() -> Pipeline {
    let mut env = TestEnv::new().await;
    let kafka = OwnKafka::start(&env.id, 3).await;
    kafka.serve(&mut env);
    let api = ServiceProcess::api(&env, &[]).await;
    let processor = ServiceProcess::processor(&env, &[]).await;
    Pipeline {
        env,
        kafka,
        api,
        _processor: processor,
    }
}

impl Pipeline {
    fn topics(&self) -> Vec<String> {
        let topics = self.env.kafka().topics();
        let mut all: Vec<String> = topics.all().map(str::to_owned).to_vec();
        all.push("__consumer_offsets".into());
        all
    }

    async fn wait_in_sync(&self) {
        let topics = self.topics();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.kafka.wait_in_sync(&topics).await;
    }

    /// Stops the load, checks every answer was a 202 or a 503, and that
    /// every acknowledged file is loaded exactly once.
    async fn finish(&self, load: SteadyLoad) -> LoadReport {
        let report = load.stop().await;
        assert!(
            report.unexpected.is_empty(),
            "answers other than 202 and 503 dependency_unavailable: {:?}",
            report.unexpected
        );
        let records =
            assert_loaded_exactly_once(&self.env, &report.acknowledged, LOAD_DEADLINE).await;
        eprintln!(
            "counted: {} imports acknowledged, each loaded once; {records} FileLoaded records; {} answers 503",
            report.acknowledged.len(),
            report.unavailable
        );
        report
    }
}

#[tokio::test]
async fn kill_9_of_a_partition_leader_under_load_loses_nothing_and_doubles_nothing() {
    let mut p = pipeline().await;
    let load = SteadyLoad::start(&p.api, &p.env.id, 4);
    load.wait_for_more(50, LOAD_DEADLINE, "imports before the kill")
        .await;

    let topic = p.env.kafka().topics().file_extract_success;
    let leader = p.kafka.leader_of(&topic, 0).await;
    p.kafka.node(leader).kill();
    eprintln!("injected: kill -9 of node {leader}, leader of {topic}[0]");

    // Two replicas of three are enough for min.insync.replicas = 2.
    let moved = eventually(LOAD_DEADLINE, "another leader for partition 0", || async {
        let new = p.kafka.leader_of(&topic, 0).await;
        (new != leader).then_some(new)
    })
    .await;
    load.wait_for_more(WHILE_DOWN, LOAD_DEADLINE, "imports with a node down")
        .await;
    eprintln!(
        "counted: partition 0 led by node {moved}; {WHILE_DOWN} imports acknowledged with node {leader} down"
    );

    p.kafka.restart(leader).await;
    p.wait_in_sync().await;
    p.finish(load).await;
}

#[tokio::test]
async fn a_rolling_restart_of_every_broker_under_load_loses_nothing_and_doubles_nothing() {
    let mut p = pipeline().await;
    let load = SteadyLoad::start(&p.api, &p.env.id, 4);
    load.wait_for_more(50, LOAD_DEADLINE, "imports before the restarts")
        .await;

    for node in p.kafka.node_ids() {
        // As an operator restarts a broker: a clean stop, then the next one
        // only once every replica is in sync again.
        p.kafka.node(node).stop();
        load.wait_for_more(
            WHILE_DOWN / 2,
            LOAD_DEADLINE,
            &format!("imports with node {node} stopped"),
        )
        .await;
        p.kafka.restart(node).await;
        p.wait_in_sync().await;
        eprintln!("injected: node {node} of 3 stopped and started again; all replicas in sync");
    }
    load.wait_for_more(50, LOAD_DEADLINE, "imports after the restarts")
        .await;
    p.finish(load).await;
}

#[tokio::test]
async fn with_two_of_three_brokers_down_the_api_refuses_imports_and_says_why() {
    let mut p = pipeline().await;
    let (api, tag) = (&p.api, p.env.id.clone());
    let post = |n: u32| {
        post_import(
            api,
            serde_json::to_vec(&generated_company(&tag, n)).unwrap(),
        )
    };
    assert_eq!(post(0).await.0, 202);

    let survivor = 1;
    for node in [2, 3] {
        p.kafka.node(node).kill();
    }
    eprintln!("injected: kill -9 of nodes 2 and 3 of 3");

    let report = eventually(
        LOAD_DEADLINE,
        "the api's readiness to name kafka",
        || async {
            let (status, report) = readiness(&p.api).await;
            (status == 503).then_some(report)
        },
    )
    .await;
    assert_eq!(report["checks"]["kafka"]["ok"], false, "{report}");
    assert_eq!(report["checks"]["s3"]["ok"], true, "{report}");
    // Which partition cannot be written, and why: with two of the three
    // controllers gone the survivor's metadata is frozen, naming leaders
    // that are dead (a cluster with separate controllers would show one
    // replica in sync, under min.insync.replicas).
    let why = report["checks"]["kafka"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains(" partition "), "{report}");

    // acks=all with min.insync.replicas 2: one broker cannot make a write
    // durable, so nothing may be acknowledged.
    for n in 1..=3 {
        let (status, body) = post(n).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "dependency_unavailable", "{body}");
    }
    eprintln!(
        "counted: readiness 503 naming kafka ({why}); 3 imports answered 503 with node {survivor} alone"
    );

    p.kafka.restart(2).await;
    eventually(LOAD_DEADLINE, "the api to be ready again", || async {
        (readiness(&p.api).await.0 == 200).then_some(())
    })
    .await;
    let (status, body) = post(4).await;
    assert_eq!(status, 202, "{body}");
    eprintln!("counted: ready and 202 again with two nodes of three");
}

/// As `make dev-up` runs Kafka: one broker, killed with `kill -9` and
/// started again, three times in a row under load. Each time the api must
/// acknowledge imports again soon after the broker is back (a producer left
/// broken by the outage would answer 503 for ever), and in the end every
/// acknowledged file is loaded and announced once and the lag is 0.
#[tokio::test]
async fn kill_9_of_the_only_broker_three_times_under_load_recovers_each_time() {
    /// Far more than librdkafka needs to reconnect; far less than for ever.
    const BACK_WITHIN: Duration = Duration::from_secs(30);
    let mut env = TestEnv::new().await;
    let mut kafka = OwnKafka::start(&env.id, 1).await;
    kafka.serve(&mut env);
    let api = ServiceProcess::api(&env, &[]).await;
    let _processor = ServiceProcess::processor(&env, &[]).await;
    let load = SteadyLoad::start(&api, &env.id, 4);
    load.wait_for_more(30, LOAD_DEADLINE, "imports before the first kill")
        .await;

    for round in 1..=3 {
        kafka.node(1).kill();
        eventually(
            LOAD_DEADLINE,
            "the api's readiness to name kafka",
            || async {
                let (status, report) = readiness(&api).await;
                (status == 503 && report["checks"]["kafka"]["ok"] == false).then_some(())
            },
        )
        .await;
        kafka.restart(1).await;
        let back = std::time::Instant::now();
        load.wait_for_more(1, BACK_WITHIN, "a 202 after the broker's return")
            .await;
        eprintln!(
            "injected: kill -9 of the only broker, round {round}; first 202 {} ms after it was back",
            back.elapsed().as_millis()
        );
        load.wait_for_more(20, LOAD_DEADLINE, "imports after the return")
            .await;
    }

    let report = load.stop().await;
    assert!(
        report.unexpected.is_empty(),
        "answers other than 202 and 503 dependency_unavailable: {:?}",
        report.unexpected
    );
    let records = assert_loaded_exactly_once(&env, &report.acknowledged, LOAD_DEADLINE).await;
    eprintln!(
        "counted: {} imports acknowledged, each loaded once; {records} FileLoaded records; {} answers 503",
        report.acknowledged.len(),
        report.unavailable
    );
}
