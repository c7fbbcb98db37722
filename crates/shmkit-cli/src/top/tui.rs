//! The full-screen view of `shmkit top` (ratatui on crossterm): the channel table, a
//! channel's detail with a rate sparkline, sorting and a name filter.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::{byte_rate_cell, fill_cell, rate_cell, rows, Channel, Sample, Scope, SortKey};
use crate::util::{human_size, CliResult, Context};

/// Rates kept per channel for the detail's sparkline.
const HISTORY: usize = 240;

struct App {
    scope: Scope,
    interval: Duration,
    sort: SortKey,
    filter: String,
    /// The filter being typed after `/` (Enter applies, Esc cancels).
    editing: Option<String>,
    /// The target whose detail is open.
    detail: Option<String>,
    table: TableState,
    sample: Sample,
    /// Messages/s of each channel over its last refreshes, newest last.
    history: HashMap<String, VecDeque<u64>>,
}

/// What a key asks for.
enum Action {
    Stay,
    Quit,
}

pub fn run(scope: Scope, interval: Duration, filter: String, sort: SortKey) -> CliResult {
    let sample = Sample::take(&scope);
    let mut app = App {
        scope,
        interval,
        sort,
        filter,
        editing: None,
        detail: None,
        table: TableState::default().with_selected(Some(0)),
        sample,
        history: HashMap::new(),
    };
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let _restore = crate::signals::task(restore_from_signal);
    let result = app.run(&mut terminal);
    ratatui::restore();
    result
}

impl App {
    fn run(&mut self, terminal: &mut ratatui::DefaultTerminal) -> CliResult {
        let mut next = Instant::now() + self.interval;
        loop {
            terminal.draw(|f| self.draw(f)).context("drawing")?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait).context("reading the terminal")? {
                match event::read().context("reading the terminal")? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => {
                        if let Action::Quit = self.key(k) {
                            return Ok(());
                        }
                    }
                    _ => {} // a resize: redrawn above
                }
            }
            if Instant::now() >= next {
                self.refresh();
                next = Instant::now() + self.interval;
            }
        }
    }

    fn refresh(&mut self) {
        let mut now = Sample::take(&self.scope);
        now.rates_since(&self.sample);
        for c in &now.channels {
            let h = self.history.entry(c.target.clone()).or_default();
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(c.messages_per_s.unwrap_or(0.0).round() as u64);
        }
        self.history.retain(|t, _| now.channels.iter().any(|c| &c.target == t));
        self.sample = now;
    }

    fn visible(&self) -> Vec<&Channel> {
        rows(&self.sample, &self.filter, self.sort)
    }

    fn key(&mut self, k: KeyEvent) -> Action {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Some(text) = &mut self.editing {
            match k.code {
                KeyCode::Enter => {
                    self.filter = self.editing.take().unwrap_or_default();
                    self.table.select(Some(0));
                }
                KeyCode::Esc => self.editing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return Action::Stay;
        }
        let count = self.visible().len();
        match k.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if self.detail.is_some() => self.detail = None,
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char('/') => self.editing = Some(self.filter.clone()),
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Enter if self.detail.is_none() => {
                let selected = self.table.selected().unwrap_or(0);
                self.detail = self.visible().get(selected).map(|c| c.target.clone());
            }
            KeyCode::Down | KeyCode::Char('j') if count > 0 => {
                let i = self.table.selected().unwrap_or(0);
                self.table.select(Some((i + 1).min(count - 1)));
            }
            KeyCode::Up | KeyCode::Char('k') => {
                let i = self.table.selected().unwrap_or(0);
                self.table.select(Some(i.saturating_sub(1)));
            }
            _ => {}
        }
        Action::Stay
    }

    fn draw(&mut self, f: &mut Frame) {
        let [head, body, foot] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)])
                .areas(f.area());
        let shown = self.visible().len();
        let mut title = format!(
            " shmkit top — {shown} of {} channels, every {:.1} s, by {}",
            self.sample.channels.len(),
            self.interval.as_secs_f64(),
            self.sort.label()
        );
        if !self.filter.is_empty() {
            title.push_str(&format!(", matching \"{}\"", self.filter));
        }
        if !self.sample.unreadable.is_empty() {
            title.push_str(&format!(
                " ({} not readable by this user)",
                self.sample.unreadable.len()
            ));
        }
        f.render_widget(
            Paragraph::new(title).style(Style::new().add_modifier(Modifier::BOLD)),
            head,
        );
        match self.detail.clone() {
            Some(target) => self.draw_detail(f, body, &target),
            None => self.draw_table(f, body),
        }
        let keys = match (&self.editing, &self.detail) {
            (Some(text), _) => format!(" filter: {text}_   (Enter apply, Esc cancel)"),
            (None, Some(_)) => " Esc back   q quit".to_string(),
            (None, None) => {
                " Up/Down select   Enter details   s sort   / filter   Esc clear filter   q quit"
                    .to_string()
            }
        };
        f.render_widget(
            Paragraph::new(keys).style(Style::new().add_modifier(Modifier::REVERSED)),
            foot,
        );
    }

    fn draw_table(&mut self, f: &mut Frame, area: Rect) {
        let visible = self.visible();
        let count = visible.len();
        let rows: Vec<Row> = visible
            .iter()
            .map(|c| {
                let style =
                    if c.dead_ends() > 0 { Style::new().fg(Color::Red) } else { Style::new() };
                let fill = Cell::from(fill_bar(c.fill)).style(if c.full() {
                    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
                } else {
                    Style::new()
                });
                Row::new(vec![
                    Cell::from(c.kind),
                    Cell::from(c.target.clone()),
                    Cell::from(rate_cell(c.messages_per_s)),
                    Cell::from(byte_rate_cell(c.bytes_per_s)),
                    fill,
                    Cell::from(c.lag.map_or("-".into(), |l| l.to_string())),
                    Cell::from(c.ends_summary()),
                ])
                .style(style)
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Length(9),
                Constraint::Min(20),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(15),
                Constraint::Length(7),
                Constraint::Min(24),
            ],
        )
        .header(
            Row::new(["KIND", "CHANNEL", "MSG/S", "BYTES/S", "FILL", "LAG", "ENDS"])
                .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)),
        )
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        if count == 0 {
            self.table.select(None);
        } else {
            let i = self.table.selected().unwrap_or(0).min(count - 1);
            self.table.select(Some(i));
        }
        f.render_stateful_widget(table, area, &mut self.table);
        if count == 0 {
            let why = if self.sample.channels.is_empty() {
                "no shmkit channels on this machine (yet): this view updates as they appear"
            } else {
                "no channel matches the filter (Esc clears it)"
            };
            let [_, middle, _] = Layout::vertical([
                Constraint::Length(2),
                Constraint::Length(1),
                Constraint::Min(0),
            ])
            .areas(area);
            f.render_widget(Paragraph::new(format!("  {why}")), middle);
        }
    }

    fn draw_detail(&self, f: &mut Frame, area: Rect, target: &str) {
        let block = Block::new().borders(Borders::ALL).title(format!(" {target} "));
        let inner = block.inner(area);
        f.render_widget(block, area);
        let Some(c) = self.sample.channels.iter().find(|c| c.target == target) else {
            f.render_widget(
                Paragraph::new(
                    "  this channel is gone (removed since it was opened); Esc goes back",
                ),
                inner,
            );
            return;
        };
        let [facts, spark, ends] =
            Layout::vertical([Constraint::Length(5), Constraint::Length(4), Constraint::Min(3)])
                .areas(inner);
        let mut lines = vec![
            Line::from(format!(
                "{} {}, {} segment, owner {}, created by pid {}{}",
                c.kind,
                c.shape,
                human_size(c.size),
                c.owner,
                c.creator_pid,
                c.message_type.as_ref().map_or(String::new(), |t| format!(", carries {t}"))
            )),
            Line::from(format!(
                "{} msg/s, {}   ({} messages, {} since created)",
                rate_cell(c.messages_per_s),
                byte_rate_cell(c.bytes_per_s),
                c.messages.map_or("-".into(), |m| m.to_string()),
                c.bytes.map_or("-".into(), human_size),
            )),
            Line::from(format!("fill {}", fill_bar(c.fill))),
        ];
        if let (Some(lag), Some(missed)) = (c.lag, c.missed) {
            lines.push(Line::from(format!(
                "slowest subscriber {lag} messages behind; {missed} lost to overwriting in all"
            )));
        }
        if c.dead_ends() > 0 {
            lines.push(Line::from(Span::styled(
                format!("{} end(s) attached by a process that died", c.dead_ends()),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )));
        }
        f.render_widget(Paragraph::new(lines), facts);
        let history: Vec<u64> =
            self.history.get(target).map(|h| h.iter().copied().collect()).unwrap_or_default();
        // The newest rates that fit.
        let width = spark.width.saturating_sub(2) as usize;
        let shown = &history[history.len().saturating_sub(width)..];
        let peak = shown.iter().copied().max().unwrap_or(0);
        f.render_widget(
            Sparkline::default()
                .block(Block::new().borders(Borders::TOP).title(format!(
                    " messages/s, last {:.0} s (peak {}) ",
                    shown.len() as f64 * self.interval.as_secs_f64(),
                    rate_cell(Some(peak as f64))
                )))
                .data(shown)
                .style(Style::new().fg(Color::Cyan)),
            spark,
        );
        let rows: Vec<Row> = c
            .ends
            .iter()
            .map(|e| {
                let alive = match e.alive {
                    Some(true) => "alive",
                    Some(false) => "DEAD",
                    None => "-",
                };
                let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
                Row::new(vec![
                    format!("{} #{}", e.role, e.index),
                    match (e.pid, e.foreign) {
                        (0, _) => "-".into(),
                        (pid, true) => format!("{pid}*"),
                        (pid, false) => pid.to_string(),
                    },
                    e.command.clone().unwrap_or_else(|| "-".into()),
                    e.state.to_string(),
                    alive.to_string(),
                    if e.waiting { "waiting".into() } else { String::new() },
                    rate_cell(e.messages_per_s),
                    opt(e.messages),
                    opt(e.lag),
                    opt(e.missed),
                    e.pending.map_or("-".into(), human_size),
                ])
                .style(if e.alive == Some(false) {
                    Style::new().fg(Color::Red)
                } else {
                    Style::new()
                })
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Length(14),
                Constraint::Length(8),
                Constraint::Length(16),
                Constraint::Length(9),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(12),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new([
                "END", "PID", "COMMAND", "STATE", "ALIVE", "", "MSG/S", "MESSAGES", "LAG",
                "MISSED", "PENDING",
            ])
            .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)),
        )
        .block(Block::new().borders(Borders::TOP).title(" ends "));
        f.render_widget(table, ends);
    }
}

/// A SIGTERM or SIGHUP ends the process from the signal thread: give the terminal
/// back first — but never wait long for it. The main thread may be blocked writing to
/// a terminal nobody reads (holding std's stdout lock), so the escape sequences go
/// straight to fd 1 from a thread of their own, and the process exits after 200 ms
/// whether or not that write got through.
fn restore_from_signal() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = ratatui::crossterm::terminal::disable_raw_mode();
        // Leave the alternate screen, show the cursor.
        let leave = b"\x1b[?1049l\x1b[?25h";
        // SAFETY: write(2) of a valid buffer to fd 1, which stays open for the process.
        let _ = unsafe { libc::write(1, leave.as_ptr().cast(), leave.len()) };
        let _ = done.send(());
    });
    let _ = finished.recv_timeout(Duration::from_millis(200));
}

/// `█████░░░░░  50%`: a ten-cell bar and the percentage.
fn fill_bar(fill: Option<f64>) -> String {
    match fill {
        None => "-".into(),
        Some(f) => {
            let full = ((f * 10.0).round() as usize).min(10);
            format!("{}{} {:>4}", "█".repeat(full), "░".repeat(10 - full), fill_cell(Some(f)))
        }
    }
}
