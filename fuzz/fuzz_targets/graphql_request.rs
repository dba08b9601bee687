//! The body of `POST /client/v4/graphql`: JSON, GraphQL syntax, validation,
//! the depth, complexity, size and analytics-field limits and the analytics
//! arguments, run as the endpoint runs them (with no store behind): no
//! panic, and the answer is 200 or 400, never a server error.
#![no_main]

use std::sync::OnceLock;

use banyan::analytics::graphql::check_request;
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let status = runtime().block_on(check_request("acct", data));
    assert!(
        status.as_u16() == 200 || status.as_u16() == 400,
        "status {status}"
    );
});
