//! The web console: HTTP pages, JSON API and metrics over the gateway API.

pub mod pam;
