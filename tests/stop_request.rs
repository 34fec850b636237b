//! A stop request (what SIGINT/SIGTERM set) ends admission, but every job already handed to the
//! engine finishes and is written: asked for exactly when the third job starts, so that a
//! pipeline dropping its in-flight jobs would write fewer records than it started.

use candle_core::Device;
use docanalyze::engine::{Engine, EngineConfig};
use docanalyze::input::Document;
use docanalyze::model::synthetic::{write_synthetic_gguf, SyntheticSpec};
use docanalyze::model::{GgufFile, Model};
use docanalyze::output::{Record, RecordBuffer};
use docanalyze::pipeline::{run_documents_with, JobSettings, RunControl, RunObserver};
use docanalyze::prompt::{Overflow, PromptBuilder, PromptTemplate, PromptVars};
use docanalyze::sampler::SamplingParams;
use docanalyze::signals::{StopRequest, StopSignal};
use docanalyze::tokenizer::Tokenizer;

/// Requests a stop when job number `at` starts; counts starts and records.
struct StopAt {
    at: usize,
    started: usize,
    recorded: usize,
    stop: StopRequest,
}

impl RunObserver for StopAt {
    fn job_started(&mut self, _in_flight: usize) {
        self.started += 1;
        if self.started == self.at {
            self.stop.request(StopSignal::Interrupt);
        }
    }

    fn record_finished(&mut self, _record: &Record, _in_flight: usize) {
        self.recorded += 1;
    }
}

#[test]
fn the_jobs_in_flight_when_a_stop_is_asked_are_finished_and_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_synthetic_gguf(&SyntheticSpec::tiny(), &path).unwrap();
    let mut gguf = GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf, None).unwrap();
    let chat_template = gguf.string("tokenizer.chat_template").ok();
    let model = Model::load(&mut gguf, &Device::Cpu).unwrap();
    let builder = PromptBuilder::new(
        &PromptTemplate::resolve("summarize").unwrap(),
        chat_template.as_deref(),
        None,
        PromptVars::default(),
        &tokenizer,
    )
    .unwrap();
    for k in [2, 4] {
        let mut engine = Engine::new(
            &model,
            EngineConfig {
                sequences: k,
                ctx: 256,
                batch_size: 64,
            },
            tokenizer.end_of_generation_ids(),
        )
        .unwrap();
        let documents = (0..20).map(|i| Document {
            id: format!("d{i:02}"),
            source: format!("d{i:02}.txt"),
            text: Ok(format!("Document {i} is about whales.")),
            gold: None,
        });
        let stop = StopRequest::never();
        let mut observer = StopAt {
            at: k + 1,
            started: 0,
            recorded: 0,
            stop: stop.clone(),
        };
        let mut sink = RecordBuffer::default();
        let settings = JobSettings {
            ctx: 256,
            max_tokens: 32,
            ignore_eos: true,
            sampling: SamplingParams::default(),
            overflow: Overflow::Truncate,
            chunking: None,
            priors: Vec::new(),
        };
        let summary = run_documents_with(
            &mut engine,
            &tokenizer,
            std::slice::from_ref(&builder),
            documents,
            settings,
            &mut sink,
            &mut observer,
            RunControl {
                completed: None,
                stop,
            },
        )
        .unwrap();
        assert_eq!(summary.stopped_by, Some(StopSignal::Interrupt));
        // Job k + 1 started when its slot freed: k jobs were in flight when the stop came.
        assert_eq!(observer.started, k + 1, "K={k}");
        assert_eq!(
            sink.records.len(),
            k + 1,
            "K={k}: every started job is written"
        );
        assert_eq!(observer.recorded, k + 1);
        assert!(sink.records.iter().all(|r| r.generated_tokens == 32));
    }
}
