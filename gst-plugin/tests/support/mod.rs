//! Helpers shared by the integration tests: a real mosquitto broker on a free loopback port,
//! a persistent QoS 1 subscriber, test certificates, and a TCP proxy that can break
//! connections. Use with `mod support;` in a test
//! file; each test binary compiles its own copy, so helpers one binary does not use are fine.
#![allow(dead_code)]

pub mod mosquitto;
pub mod pki;
pub mod plugin;
pub mod proxy;
