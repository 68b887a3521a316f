//! A model of one ring transition of one partition, driven through the real
//! rules: [`Place`] for what a replica does with a write, and
//! [`stream_sources`] for whom a receiver streams from.
//!
//! Owners C, M and O before the transition; C, M and R after it (O hands
//! the partition off to R); X replicates it in neither layout. One write is
//! coordinated by any node on either ring state, as `replicate_stamped`
//! does. Nodes adopt the transition, R streams from its sources, messages
//! arrive or are lost, owners die and come back with their data, in any
//! order. Once R has streamed from every source it needs, the next layout
//! is promoted; an acknowledged write must then be on W of the new owners
//! (dead ones included: their data comes back with them), or a read quorum
//! of them (N - W + 1) can miss it.

use proptest::prelude::*;

use super::place::{Owed, Place, Receipt};
use crate::rebalance::{stream_sources, Sources};

const C: usize = 0;
const M: usize = 1;
const O: usize = 2;
const R: usize = 3;
const X: usize = 4;
const NODES: usize = 5;
const NAMES: [&str; NODES] = ["C", "M", "O", "R", "X"];
const OWNERS: [usize; 3] = [C, M, O];
const NEW_OWNERS: [usize; 3] = [C, M, R];
const BEFORE: u64 = 1;
const DURING: u64 = 2;

fn place(node: usize, adopted: bool) -> Place {
    Place {
        in_now: OWNERS.contains(&node),
        in_next: adopted && NEW_OWNERS.contains(&node),
        former: false,
        in_transition: adopted,
    }
}

fn names(nodes: &[usize]) -> Vec<&'static str> {
    nodes.iter().map(|n| NAMES[*n]).collect()
}

fn node(name: &str) -> usize {
    NAMES.iter().position(|n| *n == name).unwrap()
}

/// Who waits on an answer.
#[derive(Clone, Copy, Debug)]
enum Waiter {
    /// The coordinator's slot for one replica.
    Slot(usize),
    /// A node passing the write on, waiting for everything it sent.
    Task(usize),
}

#[derive(Clone, Debug)]
struct Message {
    to: usize,
    hops: u32,
    sender_version: u64,
    waiter: Waiter,
}

#[derive(Clone, Debug)]
struct Task {
    node: usize,
    /// The node's life it was started in: a node that died answers nobody.
    life: u32,
    waiter: Waiter,
    outstanding: usize,
    done: bool,
}

#[derive(Clone, Debug)]
struct Slot {
    /// Counts towards W (false: a receiver written in the background).
    counted: bool,
    answer: Option<bool>,
}

struct World {
    adopted: [bool; NODES],
    alive: [bool; NODES],
    lives: [u32; NODES],
    holds: [bool; NODES],
    streamed: [bool; NODES],
    coordinator: usize,
    coordinated: bool,
    w: usize,
    slots: Vec<Slot>,
    messages: Vec<Message>,
    tasks: Vec<Task>,
    acknowledged: bool,
    log: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Adopt(usize),
    Coordinate,
    Deliver(usize),
    Lose(usize),
    Stream(usize),
    Kill(usize),
    Restart(usize),
    Promote,
}

impl World {
    fn new(coordinator: usize, w: usize) -> Self {
        Self {
            adopted: [false; NODES],
            alive: [true; NODES],
            lives: [0; NODES],
            holds: [false; NODES],
            streamed: [false; NODES],
            coordinator,
            coordinated: false,
            w,
            slots: Vec::new(),
            messages: Vec::new(),
            tasks: Vec::new(),
            acknowledged: false,
            log: Vec::new(),
        }
    }

    fn version(&self, node: usize) -> u64 {
        if self.adopted[node] {
            DURING
        } else {
            BEFORE
        }
    }

    fn receivers(&self, node: usize) -> Vec<usize> {
        if self.adopted[node] && node != R {
            vec![R]
        } else {
            Vec::new()
        }
    }

    /// R's sources now (`rebalance::receive_all`).
    fn sources(&self) -> Sources {
        let alive = self.alive;
        stream_sources(&names(&OWNERS), &names(&NEW_OWNERS), "R", |id| {
            alive[node(id)]
        })
    }

    /// R has adopted the transition and streamed from every source it needs.
    fn can_promote(&self) -> bool {
        let sources = self.sources();
        self.adopted[R]
            && sources.awaited.is_empty()
            && !sources.live.is_empty()
            && sources.live.iter().all(|s| self.streamed[node(s)])
    }

    fn events(&self) -> Vec<Event> {
        let mut events: Vec<Event> = (0..NODES)
            .filter(|n| !self.adopted[*n])
            .map(Event::Adopt)
            .collect();
        if !self.coordinated && self.alive[self.coordinator] {
            events.push(Event::Coordinate);
        }
        for i in 0..self.messages.len() {
            events.push(Event::Deliver(i));
            events.push(Event::Lose(i));
        }
        for s in self.sources().live.iter().map(|s| node(s)) {
            // A source streams only once it has adopted the transition.
            if self.adopted[R] && self.adopted[s] && !self.streamed[s] {
                events.push(Event::Stream(s));
            }
        }
        for n in OWNERS {
            events.push(if self.alive[n] {
                Event::Kill(n)
            } else {
                Event::Restart(n)
            });
        }
        if self.can_promote() {
            events.push(Event::Promote);
        }
        events
    }

    fn send(&mut self, from: usize, to: &[usize], hops: u32, waiter: Waiter) {
        if to.is_empty() {
            self.answer(waiter, true);
            return;
        }
        let task = self.tasks.len();
        self.tasks.push(Task {
            node: from,
            life: self.lives[from],
            waiter,
            outstanding: to.len(),
            done: false,
        });
        for &target in to {
            self.messages.push(Message {
                to: target,
                hops,
                sender_version: self.version(from),
                waiter: Waiter::Task(task),
            });
        }
    }

    fn answer(&mut self, waiter: Waiter, ok: bool) {
        match waiter {
            Waiter::Slot(i) => {
                let coordinator = self.coordinator;
                if self.alive[coordinator] && self.lives[coordinator] == 0 {
                    if self.slots[i].answer.is_none() {
                        self.slots[i].answer = Some(ok);
                    }
                    self.count();
                }
            }
            Waiter::Task(t) => {
                let task = &mut self.tasks[t];
                if task.done {
                    return;
                }
                if ok {
                    task.outstanding -= 1;
                }
                if !ok || task.outstanding == 0 {
                    task.done = true;
                    let (node, life, waiter) = (task.node, task.life, task.waiter);
                    if self.alive[node] && self.lives[node] == life {
                        self.answer(waiter, ok);
                    }
                }
            }
        }
    }

    fn count(&mut self) {
        let acks = self
            .slots
            .iter()
            .filter(|s| s.counted && s.answer == Some(true))
            .count();
        if acks >= self.w {
            self.acknowledged = true;
        }
    }

    /// The coordinator writes its own copy, then reads its ring state and
    /// sends the write out (`Coordinator::replicate_stamped`).
    fn coordinate(&mut self) {
        self.coordinated = true;
        let me = self.coordinator;
        self.holds[me] = true;
        let here = place(me, self.adopted[me]);
        let version = self.version(me);
        let receivers: Vec<usize> = self
            .receivers(me)
            .into_iter()
            .filter(|r| *r != me)
            .collect();
        for owner in OWNERS {
            self.slots.push(Slot {
                counted: true,
                answer: None,
            });
            let slot = self.slots.len() - 1;
            if owner != me {
                self.messages.push(Message {
                    to: owner,
                    hops: 0,
                    sender_version: version,
                    waiter: Waiter::Slot(slot),
                });
            } else if here.hands_off() {
                // Counts itself once the receivers hold the write.
                self.send(me, &receivers, 1, Waiter::Slot(slot));
            } else {
                self.slots[slot].answer = Some(true);
            }
        }
        if !here.hands_off() {
            for receiver in receivers {
                self.slots.push(Slot {
                    counted: false,
                    answer: None,
                });
                let slot = self.slots.len() - 1;
                self.messages.push(Message {
                    to: receiver,
                    hops: 0,
                    sender_version: version,
                    waiter: Waiter::Slot(slot),
                });
            }
        }
        self.count();
    }

    /// A replica write arrives (`Coordinator::accept`, then
    /// `pass_on_after_receive`).
    fn deliver(&mut self, message: Message) {
        let node = message.to;
        if !self.alive[node] {
            self.answer(message.waiter, false);
            return;
        }
        let here = place(node, self.adopted[node]);
        let version = self.version(node);
        match here.receipt(message.hops, message.sender_version, version) {
            Receipt::Refuse => self.answer(message.waiter, false),
            Receipt::PassToOwners => {
                let live: Vec<usize> = OWNERS.into_iter().filter(|o| self.alive[*o]).collect();
                if live.is_empty() {
                    self.answer(message.waiter, false);
                } else {
                    self.send(node, &live, message.hops + 1, message.waiter);
                }
            }
            Receipt::Keep => {
                self.holds[node] = true;
                match here.owes(message.sender_version, version) {
                    Owed::Nothing => self.answer(message.waiter, true),
                    Owed::Receivers => {
                        let to: Vec<usize> = self
                            .receivers(node)
                            .into_iter()
                            .filter(|r| *r != node)
                            .collect();
                        self.send(node, &to, message.hops + 1, message.waiter);
                    }
                    Owed::GainedOwners => {
                        unreachable!("the model ends at the promotion")
                    }
                }
            }
        }
    }

    /// Applies `event`; true once the next layout is promoted.
    fn apply(&mut self, event: Event) -> bool {
        self.log.push(match event {
            Event::Deliver(i) | Event::Lose(i) => {
                let m = &self.messages[i];
                format!(
                    "{event:?}: to {} hops {} from version {}",
                    NAMES[m.to], m.hops, m.sender_version
                )
            }
            Event::Adopt(n) | Event::Stream(n) | Event::Kill(n) | Event::Restart(n) => {
                format!("{event:?}: {}", NAMES[n])
            }
            _ => format!("{event:?}"),
        });
        match event {
            Event::Adopt(n) => self.adopted[n] = true,
            Event::Coordinate => self.coordinate(),
            Event::Deliver(i) => {
                let message = self.messages.remove(i);
                self.deliver(message);
            }
            Event::Lose(i) => {
                let message = self.messages.remove(i);
                self.answer(message.waiter, false);
            }
            Event::Stream(s) => {
                self.streamed[s] = true;
                if self.holds[s] {
                    self.holds[R] = true;
                }
            }
            Event::Kill(n) => self.alive[n] = false,
            Event::Restart(n) => {
                self.alive[n] = true;
                self.lives[n] += 1;
            }
            Event::Promote => return true,
        }
        false
    }
}

/// One history: applies the events `choices` pick until the promotion;
/// `Some(W)` when an acknowledged write was checked at it.
fn run(coordinator: usize, w: usize, choices: &[u16]) -> Result<Option<usize>, TestCaseError> {
    let mut world = World::new(coordinator, w);
    for choice in choices {
        let events = world.events();
        let event = events[usize::from(*choice) % events.len()];
        if world.apply(event) {
            if !world.acknowledged {
                return Ok(None);
            }
            let holders = NEW_OWNERS.iter().filter(|n| world.holds[**n]).count();
            prop_assert!(
                holders >= w,
                "a write coordinated by {} and acknowledged at W={} is on {} of the new owners at the promotion; history:\n{}",
                NAMES[coordinator], w, holders, world.log.join("\n")
            );
            return Ok(Some(w));
        }
    }
    Ok(None)
}

#[test]
fn an_acknowledged_write_is_on_w_new_owners_at_the_promotion() {
    let checked = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(20_000));
    let histories = (
        prop_oneof![Just(C), Just(M), Just(O), Just(R), Just(X)],
        1usize..=3,
        proptest::collection::vec(any::<u16>(), 1..80),
    );
    let outcome = runner.run(&histories, |(coordinator, w, choices)| {
        if run(coordinator, w, &choices)?.is_some() {
            checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    let checked = checked.into_inner();
    println!("transition model: {checked} acknowledged writes checked at the promotion");
    assert!(
        checked > 1_000,
        "too few histories reached the promotion with an acknowledged write: {checked}"
    );
}
