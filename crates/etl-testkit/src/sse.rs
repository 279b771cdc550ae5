//! Reading a Server-Sent Events answer (the monitor's live stream).

use std::time::Instant;

use serde_json::Value;

use crate::DEADLINE;

/// Reads an SSE response until `done` holds for the events received so far.
pub async fn read_events(
    response: &mut reqwest::Response,
    what: &str,
    done: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let deadline = Instant::now() + DEADLINE;
    let (mut buffer, mut events) = (String::new(), Vec::new());
    while !done(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}; got {events:#?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("stream ended waiting for {what}; got {events:#?}"));
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in message.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                events.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}
