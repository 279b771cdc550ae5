//! Two processor instances in one consumer group, with rebalances in the
//! middle of a load: a second instance joins, then the first leaves. Each
//! acknowledged file is loaded exactly once, and both did part of the work.

use std::time::Duration;

use etl_testkit::{
    ServiceProcess, TestEnv, assert_loaded_exactly_once, eventually, files_recorded,
    import_generated, metric, scrape,
};

const FILES: u32 = 2_000;
const PER_REQUEST: u32 = 100;
const DEADLINE: Duration = Duration::from_secs(300);
/// Few lanes, so that the load outlasts the group's rebalances whatever
/// the machine; more than one, so that offsets are
/// committed from several files in flight when partitions change hands.
const PROCESSOR: &[(&str, &str)] = &[("PROCESSOR_CONCURRENCY", "2")];

async fn files_loaded_by(processor: &ServiceProcess) -> f64 {
    metric(
        &scrape(processor).await,
        "processor_files_total",
        &[("outcome", "loaded")],
    )
}

#[tokio::test]
async fn two_processors_with_rebalances_mid_load_load_each_file_once() {
    let env = TestEnv::new().await;
    let api = ServiceProcess::api(&env, &[]).await;
    let mut first = ServiceProcess::processor(&env, PROCESSOR).await;

    let acknowledged = import_generated(&api, &env.id, 0..FILES, PER_REQUEST).await;

    eventually(DEADLINE, "the first processor to be loading", || async {
        (files_recorded(&env).await >= 30).then_some(())
    })
    .await;
    let second = ServiceProcess::processor(&env, PROCESSOR).await;
    let at_join = files_recorded(&env).await;
    eprintln!(
        "injected: a second processor joined the group with {at_join} of {FILES} files loaded"
    );
    assert!(
        at_join < i64::from(FILES),
        "the join came too late to test anything"
    );

    eventually(
        DEADLINE,
        "the second processor to get partitions and load",
        || async { (files_loaded_by(&second).await > 0.0).then_some(()) },
    )
    .await;
    let by_first = files_loaded_by(&first).await;
    let at_leave = files_recorded(&env).await;
    first.signal("TERM");
    let status = first.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "first processor exit: {status}");
    eprintln!(
        "injected: the first processor left the group (SIGTERM) with {at_leave} of {FILES} files loaded"
    );

    let records = assert_loaded_exactly_once(&env, &acknowledged, DEADLINE).await;
    let by_second = files_loaded_by(&second).await;
    assert!(
        by_first > 0.0 && by_second > 0.0,
        "both instances loaded files"
    );
    // `by_first` was read before SIGTERM (the file in hand is finished
    // after it), so the sum may fall short, but never exceed.
    assert!(
        by_first + by_second <= f64::from(FILES),
        "no file loaded by both instances: {by_first} + {by_second}"
    );
    eprintln!(
        "counted: {FILES} ledger rows, first instance loaded {by_first}, second {by_second}, {records} FileLoaded records"
    );
}

/// The member that leads the group (the first to join) is killed while a
/// second member keeps heartbeating: the survivor must take over every
/// partition (the group's coordinator must notice the leader is gone and
/// let the other member lead).
#[tokio::test]
async fn kill_9_of_the_group_leader_hands_everything_to_the_survivor() {
    let env = TestEnv::new().await;
    let api = ServiceProcess::api(&env, &[]).await;
    let mut leader = ServiceProcess::processor(&env, PROCESSOR).await;
    let survivor = ServiceProcess::processor(&env, PROCESSOR).await;

    let acknowledged = import_generated(&api, &env.id, 0..FILES, PER_REQUEST).await;
    // Both members hold partitions: the group is formed with both.
    eventually(DEADLINE, "both processors to be loading", || async {
        (files_loaded_by(&leader).await > 0.0 && files_loaded_by(&survivor).await > 0.0)
            .then_some(())
    })
    .await;
    leader.kill().await;
    let at_kill = files_recorded(&env).await;
    eprintln!("injected: kill -9 of the group leader with {at_kill} of {FILES} files loaded");
    assert!(at_kill < i64::from(FILES), "the kill came too late");

    assert_loaded_exactly_once(&env, &acknowledged, DEADLINE).await;
    assert!(
        files_loaded_by(&survivor).await > 0.0,
        "the survivor loaded what the leader left"
    );
}
