//! `ipkeepctl` as an operator types it: bad input is refused before anything
//! is sent, with the argument and the reason, and a daemon that is not there
//! is named with the way to point at the right one. (Talking to a daemon is
//! tested end to end in cluster-test; this file also makes `cargo test`
//! build the ipkeepctl binary those tests exec.)

use std::process::{Command, Output};

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipkeepctl"))
        .args(["--socket", "/nonexistent/ipkeepd.sock"])
        .args(args)
        .output()
        .expect("exec ipkeepctl")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_cidr_is_refused_naming_the_argument() {
    let out = ctl(&["subnet", "create", "pods", "--cidr", "10.0.0.0/33"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--cidr") && err.contains("is not a CIDR"),
        "{err}"
    );
}

#[test]
fn a_backwards_range_is_refused_with_the_reason() {
    let out = ctl(&["ip", "reserve", "10.0.0.9-10.0.0.5", "--note", "router"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("starts after it ends"), "{err}");
}

#[test]
fn an_absent_daemon_is_named_with_how_to_point_at_it() {
    let out = ctl(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/ipkeepd.sock") && err.contains("--socket"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout");
    // Each cause said once, though the client's error already ends with it.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
