//! Runtime integration tests on the tiny fixture model (written by the test kit).
