//! Fault injection for tests of the services' recovery from librdkafka's
//! fatal state. No broker reaches that state on demand (it takes a fenced
//! or expired producer id, or an out-of-order sequence), so librdkafka
//! offers `rd_kafka_test_fatal_error`, which raises one as if the cluster
//! had. The services call it only when a test asks them to through
//! `ETL_TEST_KAFKA_PRODUCER_FATAL` or `ETL_TEST_KAFKA_CONSUMER_FATAL`
//! (docs/reliability.md); their crates keep `unsafe_code = "forbid"`.

use std::ffi::CString;

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::types::RDKafkaRespErr;

/// Puts `client` into the fatal state with an out-of-order-sequence error
/// (a real cause of it for idempotent producers) and `reason` in its
/// message. `false` when the client was fatal already.
pub fn raise_fatal<C: ClientContext>(client: &Client<C>, reason: &str) -> bool {
    let reason = CString::new(reason.replace('\0', " ")).expect("no NUL left");
    // SAFETY: the client pointer is valid while `client` is borrowed, and
    // librdkafka copies `reason` before returning.
    #[allow(unsafe_code)]
    let answer = unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            client.native_ptr(),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        )
    };
    answer == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
}
