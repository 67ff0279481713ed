//! A message off the queue, as the dispatcher and the dead-letter tools decode it: its
//! properties as they come off the wire (lapin's own `parse_properties`, the AMQP 0-9-1
//! content header), then what `dispatcher`'s settling and `mailroom::dead` read of them
//! (`broker::header_int`, `broker::header_str` for each of Mailroom's headers and for every
//! header the message has), and its body through `Job::from_slice`. Anyone who can publish to
//! the exchange controls all of it.
//!
//! Input: two bytes (big-endian) giving the length N of the properties, N bytes of properties
//! in AMQP's encoding (flags, then each present field; headers are a field table), then the
//! body. Properties that do not parse are the default ones (such a message never arrives, but
//! its body is decoded all the same). `fuzz/corpus/job_decode/` has examples.
//!
//! Beyond "no panic": a job that decodes encodes back to itself, and its kind and locale parse
//! back to themselves.

#![no_main]

use lapin::BasicProperties;
use lapin::protocol::basic::parse_properties;
use libfuzzer_sys::fuzz_target;
use mailroom::broker;
use mailroom::domain::Locale;
use mailroom::job::{Job, JobKind};

const HEADERS: [&str; 6] = [
    broker::ATTEMPT_HEADER,
    broker::REPLAY_HEADER,
    broker::ERROR_CLASS_HEADER,
    broker::LAST_ERROR_HEADER,
    broker::DIED_AT_HEADER,
    broker::RECIPIENT_HEADER,
];

fuzz_target!(|data: &[u8]| {
    let (props, body) = match data {
        [hi, lo, rest @ ..] => {
            let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
            rest.split_at(n)
        }
        _ => (&[][..], data),
    };
    let props: BasicProperties = parse_properties(props).map(|(_, p)| p).unwrap_or_default();

    // What the dispatcher's settling and `dead::DeadLetter::from_message` read.
    let _ = props.message_id().as_ref().map(|m| m.as_str().to_owned());
    for name in HEADERS {
        let _ = broker::header_int(&props, name);
        let _ = broker::header_str(&props, name);
    }
    if let Some(headers) = props.headers() {
        for name in headers.inner().keys() {
            let _ = broker::header_int(&props, name.as_str());
            let _ = broker::header_str(&props, name.as_str());
        }
    }

    let Ok(job) = Job::from_slice(body) else {
        return;
    };
    assert_eq!(
        Job::from_slice(&job.to_vec()).expect("an encoded job decodes"),
        job,
        "a job encodes back to itself"
    );
    assert_eq!(JobKind::parse(job.kind.as_str()), Some(job.kind));
    assert_eq!(Locale::parse(job.locale.as_str()).as_ref(), Ok(&job.locale));
    let _ = job.locale.fallback_chain();
});
