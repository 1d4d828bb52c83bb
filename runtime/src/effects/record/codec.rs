//! An effect record as a message payload: a magic number, then the writes
//! and the outputs, every field length-prefixed.

use async_nats::HeaderMap;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Record;
use crate::staged::Outgoing;
use crate::state::{Condition, Write};

const MAGIC: &[u8; 4] = b"WFX1";

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

/// A record as a message payload: a magic number, then the writes and the
/// outputs, every field length-prefixed.
pub(super) fn encode(record: &Record) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(MAGIC);
    out.put_u32(record.writes.len() as u32);
    for w in &record.writes {
        put_bytes(&mut out, w.bucket.as_bytes());
        put_bytes(&mut out, w.key.as_bytes());
        match w.condition {
            Condition::None => out.put_u8(0),
            Condition::Revision(r) => {
                out.put_u8(1);
                out.put_u64(r);
            }
            Condition::Absent => out.put_u8(2),
        }
        match &w.value {
            Some(v) => {
                out.put_u8(1);
                put_bytes(&mut out, v);
            }
            None => out.put_u8(0),
        }
    }
    out.put_u32(record.outputs.len() as u32);
    for o in &record.outputs {
        put_bytes(&mut out, o.subject.as_bytes());
        out.put_u8(u8::from(o.has_msg_id));
        let pairs: Vec<(String, String)> = o
            .headers
            .iter()
            .flat_map(|(name, values)| {
                let name: &str = name.as_ref();
                values
                    .iter()
                    .map(move |v| (name.to_string(), v.as_str().to_string()))
            })
            .collect();
        out.put_u32(pairs.len() as u32);
        for (name, value) in pairs {
            put_bytes(&mut out, name.as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &o.payload);
    }
    out.freeze()
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), String> {
        if self.0.remaining() < n {
            Err("truncated".into())
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, String> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
}

/// Reads a record written by `encode`.
pub(super) fn decode(id: String, payload: Bytes) -> Result<Record, String> {
    if !payload.starts_with(MAGIC) {
        return Err("not an effect record".into());
    }
    let mut r = Reader(payload.slice(MAGIC.len()..));
    let mut writes = Vec::new();
    for _ in 0..r.u32()? {
        let bucket = r.string()?;
        let key = r.string()?;
        let condition = match r.u8()? {
            0 => Condition::None,
            1 => Condition::Revision(r.u64()?),
            2 => Condition::Absent,
            other => return Err(format!("unknown condition {other}")),
        };
        let value = match r.u8()? {
            0 => None,
            _ => Some(r.bytes()?),
        };
        writes.push(Write {
            bucket,
            key,
            value,
            condition,
        });
    }
    let mut outputs = Vec::new();
    for _ in 0..r.u32()? {
        let subject = r.string()?;
        let has_msg_id = r.u8()? != 0;
        let mut headers = HeaderMap::new();
        for _ in 0..r.u32()? {
            let name = r.string()?;
            let value = r.string()?;
            headers.append(name.as_str(), value.as_str());
        }
        let payload = r.bytes()?;
        outputs.push(Outgoing {
            subject,
            payload,
            headers,
            has_msg_id,
        });
    }
    if r.0.has_remaining() {
        return Err("trailing bytes".into());
    }
    Ok(Record {
        id,
        writes,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let mut headers = HeaderMap::new();
        headers.insert("X-A", "1");
        headers.append("X-A", "2");
        headers.insert("Nats-Msg-Id", "mine");
        let record = Record {
            id: "r1".into(),
            writes: vec![
                Write {
                    bucket: "acct".into(),
                    key: "a.b".into(),
                    value: Some(Bytes::from_static(b"\x00\xff")),
                    condition: Condition::Revision(42),
                },
                Write {
                    bucket: "acct".into(),
                    key: "gone".into(),
                    value: None,
                    condition: Condition::None,
                },
                Write {
                    bucket: "seen".into(),
                    key: "p-1".into(),
                    value: Some(Bytes::new()),
                    condition: Condition::Absent,
                },
            ],
            outputs: vec![Outgoing {
                subject: "out.x".into(),
                payload: Bytes::from_static(b"payload"),
                headers,
                has_msg_id: true,
            }],
        };
        let back = decode("r1".into(), encode(&record)).unwrap();
        assert_eq!(back.writes, record.writes);
        assert_eq!(back.outputs.len(), 1);
        let o = &back.outputs[0];
        assert_eq!((o.subject.as_str(), o.has_msg_id), ("out.x", true));
        assert_eq!(o.payload, record.outputs[0].payload);
        let values: Vec<&str> = o.headers.get_all("X-A").map(|v| v.as_str()).collect();
        assert_eq!(values, ["1", "2"]);
        for bad in [&b"WFX1\x00\x00"[..], b"nope", &encode(&record)[..20]] {
            assert!(decode(String::new(), Bytes::copy_from_slice(bad)).is_err());
        }
    }
}
