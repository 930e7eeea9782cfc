//! Test helper: a process that holds many connections to a daemon, as a
//! misbehaving client would, until its standard input closes.
//!
//! ipkeep-hold-connections unix SOCKET COUNT
//!     opens COUNT node API connections and sends nothing on them.
//! ipkeep-hold-connections tcp ADDR COUNT
//!     keeps COUNT TCP connections open to ADDR without a handshake,
//!     opening a new one for each the other side closes.
//!
//! Prints one line, `opened N`, once it has tried its COUNT connections
//! (N is how many the kernel connected), then holds them.

use std::io::{BufRead, Read};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, target, count] = args.as_slice() else {
        bail!("usage: ipkeep-hold-connections unix|tcp TARGET COUNT");
    };
    let count: usize = count.parse().context("COUNT")?;
    ipkeep_api::os::raise_fd_limit();
    let done = Arc::new(AtomicBool::new(false));
    match kind.as_str() {
        "unix" => {
            let held: Vec<UnixStream> = (0..count)
                .filter_map(|_| UnixStream::connect(target).ok())
                .collect();
            println!("opened {}", held.len());
            wait_for_stdin_to_close();
            drop(held);
        }
        "tcp" => {
            let (first_tried, tried) = std::sync::mpsc::channel();
            let workers: Vec<_> = (0..count)
                .map(|_| {
                    let (target, done, first_tried) =
                        (target.clone(), done.clone(), first_tried.clone());
                    std::thread::spawn(move || hold_tcp(&target, &done, first_tried))
                })
                .collect();
            drop(first_tried);
            let connected = tried.iter().take(count).filter(|ok| *ok).count();
            println!("opened {connected}");
            wait_for_stdin_to_close();
            done.store(true, Ordering::Relaxed);
            for w in workers {
                let _ = w.join();
            }
        }
        other => bail!("unknown kind {other:?}: unix or tcp"),
    }
    Ok(())
}

/// One connection at a time to `target`: held until the other side closes
/// it, then opened again, until `done`. Says whether its first connect
/// went through.
fn hold_tcp(target: &str, done: &AtomicBool, first_tried: std::sync::mpsc::Sender<bool>) {
    let mut buf = [0u8; 512];
    let mut first_tried = Some(first_tried);
    while !done.load(Ordering::Relaxed) {
        let connected = TcpStream::connect_timeout(
            &target.parse().expect("ADDR is IP:PORT"),
            Duration::from_secs(1),
        );
        if let Some(tell) = first_tried.take() {
            let _ = tell.send(connected.is_ok());
        }
        let Ok(mut stream) = connected else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        loop {
            if done.load(Ordering::Relaxed) {
                return;
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }
}

fn wait_for_stdin_to_close() {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        if line.is_err() {
            break;
        }
    }
}
