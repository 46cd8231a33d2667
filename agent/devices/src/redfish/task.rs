//! Following a Redfish Task (TaskService) to its end: PercentComplete for progress, TaskState
//! for the end, Messages for what the service said.

use super::client::{odata_id, refusal, Body, Client, Reply};
use crate::device::DeviceError;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The task an accepted asynchronous request started: the Task resource's URI when the reply
/// carries one, else the task monitor in `Location`; `None` when the request completed at once.
pub(crate) fn task_of(reply: &Reply) -> Option<String> {
    let is_task = reply.body.get("TaskState").is_some();
    match (is_task, odata_id(&reply.body), &reply.location) {
        (true, Some(uri), _) => Some(uri),
        (_, _, Some(location)) if reply.status == 202 => Some(location.clone()),
        _ => None,
    }
}

/// `MessageId: Message` of each of a task's messages.
fn messages(task: &Value) -> Vec<String> {
    let Some(list) = task.get("Messages").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|m| {
            let text = m.get("Message").and_then(Value::as_str).unwrap_or("");
            match m.get("MessageId").and_then(Value::as_str) {
                Some(id) => format!("{id}: {text}"),
                None => text.to_string(),
            }
        })
        .collect()
}

/// Why a task failed: its state and its messages that are not plain progress reports (all of
/// them when every one is).
fn failure(uri: &str, state: &str, task: &Value) -> String {
    let all = messages(task);
    let telling: Vec<&String> = all
        .iter()
        .filter(|m| !m.starts_with("TaskEvent.") && !m.starts_with("Task."))
        .collect();
    let shown: Vec<&String> = if telling.is_empty() {
        all.iter().collect()
    } else {
        telling
    };
    let shown: Vec<&str> = shown.iter().map(|s| s.as_str()).collect();
    if shown.is_empty() {
        format!("task {uri} ended {state} with no message")
    } else {
        format!("task {uri} ended {state}: {}", shown.join("; "))
    }
}

/// Polls the task at `uri` every `poll` until it ends or `timeout` passes, calling
/// `on_percent` with each new PercentComplete. A task that ends Exception, Killed or Cancelled,
/// or Completed with TaskStatus Critical, is an error whose text carries the task's messages
/// verbatim, with the last percent seen.
pub(crate) fn wait(
    client: &Client,
    uri: &str,
    timeout: Duration,
    poll: Duration,
    on_percent: &mut dyn FnMut(u8),
) -> Result<(), TaskError> {
    let started = Instant::now();
    let mut percent = 0u8;
    loop {
        let what = format!("following update task {}", client.url(uri));
        let reply = client
            .send("GET", uri, Body::Empty, &what)
            .map_err(TaskError::Service)?;
        if !(200..300).contains(&reply.status) {
            return Err(TaskError::Service(refusal(&what, &reply)));
        }
        let task = &reply.body;
        if let Some(p) = task.get("PercentComplete").and_then(Value::as_u64) {
            let p = p.min(100) as u8;
            if p > percent {
                percent = p;
                on_percent(p);
            }
        }
        let state = task.get("TaskState").and_then(Value::as_str).unwrap_or("");
        let status = task
            .get("TaskStatus")
            .and_then(Value::as_str)
            .unwrap_or("OK");
        match state {
            "Completed" if status != "Critical" => return Ok(()),
            "Completed" | "Exception" | "Killed" | "Cancelled" => {
                return Err(TaskError::Failed(failure(uri, state, task), percent));
            }
            "" if reply.status == 200 && task.get("TaskState").is_none() => {
                // A task monitor answers with the operation's result once the task is done.
                return Ok(());
            }
            _ => {}
        }
        if started.elapsed() >= timeout {
            return Err(TaskError::Failed(
                format!(
                    "task {uri} still {state} at {percent}% after {} s",
                    timeout.as_secs()
                ),
                percent,
            ));
        }
        std::thread::sleep(poll);
    }
}

/// Why waiting for a task failed.
#[derive(Debug)]
pub(crate) enum TaskError {
    /// The task ended badly or took too long: the reason, and the percent it reached.
    Failed(String, u8),
    /// The service could not be asked.
    Service(DeviceError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_shows_the_telling_messages_verbatim() {
        let task = serde_json::json!({"Messages": [
            {"MessageId": "TaskEvent.1.0.TaskStarted", "Message": "started"},
            {"MessageId": "Update.1.0.ApplyFailed", "Message": "flash write error"},
        ]});
        assert_eq!(
            failure("/t/1", "Exception", &task),
            "task /t/1 ended Exception: Update.1.0.ApplyFailed: flash write error"
        );
        let task = serde_json::json!({"Messages": [{"Message": "killed by user"}]});
        assert_eq!(
            failure("/t/2", "Killed", &task),
            "task /t/2 ended Killed: killed by user"
        );
    }

    #[test]
    fn accepted_replies_point_at_their_task() {
        let reply = |status, body, location: Option<&str>| Reply {
            status,
            location: location.map(str::to_string),
            token: None,
            body,
            text: String::new(),
        };
        let task =
            serde_json::json!({"@odata.id": "/redfish/v1/TaskService/Tasks/3", "TaskState": "New"});
        assert_eq!(
            task_of(&reply(202, task, Some("/m/3"))).as_deref(),
            Some("/redfish/v1/TaskService/Tasks/3")
        );
        assert_eq!(
            task_of(&reply(202, Value::Null, Some("/m/4"))).as_deref(),
            Some("/m/4")
        );
        assert_eq!(task_of(&reply(204, Value::Null, None)), None);
    }
}
