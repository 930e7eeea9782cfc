//! A connection to the daemon and how results are printed.

use ipkeep_api::message::{Request, Response};
use ipkeep_api::{Client, ClientError};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub struct Session {
    pub client: Client,
    pub output: Output,
    pub linearizable: bool,
}

impl Session {
    /// A change, sent as is.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.client.call(request)
    }

    /// A read, made linearizable when asked.
    pub fn read(&mut self, request: Request) -> Result<Response, ClientError> {
        if self.linearizable {
            self.client.call(&Request::Linearize(Box::new(request)))
        } else {
            self.client.call(&request)
        }
    }

    pub fn print<T: Serialize>(
        &self,
        value: &T,
        table: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Output::Table => print!("{}", table()),
        }
        Ok(())
    }
}

/// "-" for nothing, else the items joined.
pub fn list<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items
            .iter()
            .map(T::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
