//! CSV output (RFC 4180 quoting by the csv crate), header first, one write per record.

use std::io::{self, Write};

use super::{Record, Sink, CSV_COLUMNS};

pub struct CsvSink {
    out: Box<dyn Write>,
}

impl CsvSink {
    pub fn new(writer: Box<dyn Write>) -> io::Result<Self> {
        Self::with_header(writer, true)
    }

    /// `header = false` when appending to a file that already has one.
    pub fn with_header(writer: Box<dyn Write>, header: bool) -> io::Result<Self> {
        let mut sink = Self { out: writer };
        if header {
            sink.write_row(CSV_COLUMNS)?;
        }
        Ok(sink)
    }

    /// The whole row reaches `out` in one `write_all`, then is flushed: a kill leaves whole
    /// records behind, at most one torn.
    fn write_row<I, T>(&mut self, fields: I) -> io::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let mut bytes = Vec::new();
        {
            // Formats the row in memory (a writer per row costs nothing next to a generation).
            let mut row = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(&mut bytes);
            row.write_record(fields)?;
            row.flush()?;
        }
        self.out.write_all(&bytes)?;
        self.out.flush()
    }
}

impl Sink for CsvSink {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        self.write_row(record.csv_row())
    }
}
