//! JSON Lines output, one object per record, flushed per record.

use std::io::{self, Write};

use super::{Record, Sink};

pub struct JsonlSink {
    writer: Box<dyn Write>,
}

impl JsonlSink {
    pub fn new(writer: Box<dyn Write>) -> Self {
        Self { writer }
    }
}

impl Sink for JsonlSink {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        // One buffer, one write: a kill leaves whole lines behind, at most one torn.
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        self.writer.flush()
    }
}
