//! `iproxy` and `inetcat` for the Rust libusbmuxd: the command lines of libusbmuxd
//! 2.1.1's tools (tools spec, `tools.md`) on the library's Rust API. iproxy is
//! event-driven (one epoll loop, a small fixed pool of setup threads); inetcat relays
//! stdin/stdout with `poll`.

#![forbid(unsafe_code)]

pub mod cli;
pub mod device;
pub mod getopt;
pub mod netaddr;
pub mod ports;
pub mod proxy;
pub mod relay;
pub mod sys;
