//! CSV output (RFC 4180 quoting by the csv crate), header first, flushed per record.

use std::io::{self, Write};

use super::{Record, Sink, CSV_COLUMNS};

pub struct CsvSink {
    writer: csv::Writer<Box<dyn Write>>,
}

impl CsvSink {
    pub fn new(writer: Box<dyn Write>) -> io::Result<Self> {
        Self::with_header(writer, true)
    }

    /// `header = false` when appending to a file that already has one.
    pub fn with_header(writer: Box<dyn Write>, header: bool) -> io::Result<Self> {
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(writer);
        if header {
            writer.write_record(CSV_COLUMNS)?;
            writer.flush()?;
        }
        Ok(Self { writer })
    }
}

impl Sink for CsvSink {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        self.writer.write_record(record.csv_row())?;
        self.writer.flush()
    }
}
