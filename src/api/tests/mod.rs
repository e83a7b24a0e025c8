//! Route tests: the whole router (`app(state).oneshot(request)`) over an in-memory
//! [`FakeCluster`](fake_cluster::FakeCluster), for every error case of the API and the OpenAPI
//! document. One module per route group; [`harness`] and [`fake_cluster`] are what they share.

mod fake_cluster;
mod harness;

mod auth;
mod errors;
mod execute;
mod executions;
mod files;
mod health;
mod mcp;
mod parsers;
mod preview;
mod quota;
mod sessions;
mod stream;
