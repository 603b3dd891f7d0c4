//! A TCP proxy on 127.0.0.1 that a test can break on purpose: cut every connection at once, or
//! silently drop what the server sends back (so a broker receives messages but its
//! acknowledgements never arrive).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

struct State {
    upstream: u16,
    drop_replies: AtomicBool,
    stopped: AtomicBool,
    connections: Mutex<Vec<TcpStream>>,
}

/// Forwards connections on [`TcpProxy::port`] to `127.0.0.1:<upstream>`; stops when dropped.
pub struct TcpProxy {
    port: u16,
    state: Arc<State>,
}

impl TcpProxy {
    /// # Panics
    /// If no loopback port can be bound.
    pub fn start(upstream: u16) -> TcpProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("binding the proxy: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy address: {e}"))
            .port();
        let state = Arc::new(State {
            upstream,
            drop_replies: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, s.upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) {
                    let mut conns = s.connections.lock().unwrap_or_else(|e| e.into_inner());
                    conns.push(c3);
                    conns.push(s3);
                }
                let up = s.clone();
                std::thread::spawn(move || pump(client, server, &up, false));
                let down = s.clone();
                std::thread::spawn(move || pump(s2, c2, &down, true));
            }
        });
        TcpProxy { port, state }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// While on, bytes from the server are read and thrown away.
    pub fn drop_replies(&self, on: bool) {
        self.state.drop_replies.store(on, Ordering::SeqCst);
    }

    /// Closes every connection made so far (both sides), as a network failure would.
    pub fn cut(&self) {
        let mut conns = self
            .state
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for c in conns.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: &State, reply: bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if reply && state.drop_replies.load(Ordering::SeqCst) {
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        self.cut();
    }
}
