//! Crashes for real: `kill -9` of the processor in the middle of a large
//! load, and a frozen broker. Every acknowledged file must end up loaded
//! exactly once.

use std::time::Duration;

use etl_testkit::{
    OwnKafka, ServiceProcess, TestEnv, assert_loaded_exactly_once, eventually, files_recorded,
    import_generated,
};

const FILES: u32 = 2_000;
const PER_REQUEST: u32 = 250;
/// Loading 2,000 files takes a while on a 2-core machine.
const LOAD_DEADLINE: Duration = Duration::from_secs(600);
/// The group protocol in the processor's log: if a group ever stalls again,
/// the log shows the joins and syncs the broker answered.
const GROUP_DEBUG: &[(&str, &str)] = &[
    ("KAFKA_DEBUG", "cgrp"),
    ("RUST_LOG", "info,librdkafka=debug"),
];

#[tokio::test]
async fn kill_9_of_the_processor_mid_load_loses_nothing_and_loads_nothing_twice() {
    let env = TestEnv::new().await;
    let api = ServiceProcess::api(&env, &[]).await;
    let mut processor = ServiceProcess::processor(&env, GROUP_DEBUG).await;

    let acknowledged = import_generated(&api, &env.id, 0..FILES, PER_REQUEST).await;

    let loaded_at_kill = eventually(LOAD_DEADLINE, "the processor to be mid-load", || async {
        let loaded = files_recorded(&env).await;
        (loaded >= 200).then_some(loaded)
    })
    .await;
    processor.kill().await;
    let loaded_after_kill = files_recorded(&env).await;
    eprintln!(
        "injected: kill -9 of the processor with {loaded_at_kill}..{loaded_after_kill} of {FILES} files loaded"
    );
    assert!(
        loaded_after_kill < i64::from(FILES),
        "the kill came too late"
    );

    processor.restart().await;
    let records = assert_loaded_exactly_once(&env, &acknowledged, LOAD_DEADLINE).await;
    eprintln!(
        "counted: {FILES} ledger rows, {FILES} companies, {records} FileLoaded records for {FILES} files"
    );
}

/// The broker coordinating the processor's group freezes (a stalled VM or
/// disk) for longer than the session timeout while the processor is loading:
/// its heartbeats are answered late or not at all, the cluster fences the
/// frozen node and moves its partitions and the group elsewhere, and the
/// group must assign partitions again, on the other two brokers and after
/// the thaw.
#[tokio::test]
async fn a_broker_frozen_past_the_session_timeout_does_not_stall_the_group() {
    let mut env = TestEnv::new().await;
    let mut kafka = OwnKafka::start(&env.id, 3).await;
    kafka.serve(&mut env);
    let api = ServiceProcess::api(&env, &[]).await;
    let _processor = ServiceProcess::processor(&env, GROUP_DEBUG).await;
    let mut acknowledged = import_generated(&api, &env.id, 0..300, 100).await;
    eventually(LOAD_DEADLINE, "the processor to be loading", || async {
        (files_recorded(&env).await >= 20).then_some(())
    })
    .await;

    // Longer than the tests' session timeout (6 s) and the brokers' (6 s):
    // the group drops the member and the controller fences the node.
    let coordinator = kafka.coordinator_of(&env.vars["PROCESSOR_GROUP_ID"]).await;
    kafka
        .node(coordinator)
        .freeze_for(Duration::from_secs(10))
        .await;
    let at_thaw = files_recorded(&env).await;
    eprintln!(
        "injected: node {coordinator} of 3, the group's coordinator, frozen for 10 s with {at_thaw} of 300 files loaded"
    );
    // Posted after the thaw, these reach the processor only through a group
    // that assigns partitions again (the processor may well have fetched
    // all of the first 300 before the freeze).
    acknowledged.extend(import_generated(&api, &env.id, 300..400, 100).await);

    assert_loaded_exactly_once(&env, &acknowledged, Duration::from_secs(180)).await;
}
