//! Integration tests of the HTTP services: each test starts the real server on 127.0.0.1:0 and
//! talks HTTP to it (issue 5 acceptance).

mod spawn;
mod support;
