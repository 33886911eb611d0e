//! Arbitrary bytes as a stack file and an OpsWorks Custom JSON: parsing, the deep merge,
//! validation and every error message must give an answer, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use provision_core::stack::{Secrets, Stack};

fuzz_target!(|data: &[u8]| {
    // The first NUL splits the stack file from the Custom JSON: the seed corpus (plain stack
    // files) works as it is, and the fuzzer grows a JSON part by adding a NUL.
    let (toml, json) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Ok(toml) = std::str::from_utf8(toml) else {
        return;
    };
    let json = match json.map(std::str::from_utf8) {
        Some(Err(_)) => return,
        Some(Ok(json)) => Some(json),
        None => None,
    };
    match Stack::parse(toml, "stack.toml", json.map(|json| (json, "custom.json"))) {
        Ok(stack) => {
            // What the CLI computes from a stack before it touches a host.
            let _ = stack.check_secrets(stack.hosts());
            let _ = stack.haproxy_backends(&|_| Some(2));
            let _ = stack.zeo_address();
            let _ = stack.broker();
            let _ = stack.solr_host();
            let _ = stack.blob_server();
            let _ = stack.gluster_peers();
            let _ = stack.relstorage_db_host();
            let _ = stack.memcached_servers();
            let _ = stack.beat_host();
            let _ = stack.pack_host();
            let _ = stack.secrets().mask(toml);
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
    // The secrets file is TOML too.
    if let Err(error) = Secrets::parse(toml, "secrets.toml") {
        let _ = error.to_string();
    }
});
