//! Nothing here: the tests in `tests/` start the services' binaries (see
//! `etl_testkit::ServiceProcess`) and talk to them over HTTP, Kafka and SQL.
