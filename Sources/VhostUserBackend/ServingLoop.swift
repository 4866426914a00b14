import CVirtioShim
import VirtioCore

/// What one serving loop serves: sessions in slots — the back-end has one, the switch one per
/// port — each moved by the host's ``FrameForwarding``, and what the host does around them.
/// ``serve()`` is the loop; a host only answers its questions. One thread, no locks.
protocol ServingHost: AnyObject {
    associatedtype Forwarding: FrameForwarding
    /// One slot per front-end served at once; nil while free.
    var sessions: [BackendConnection?] { get set }
    /// Empty rounds before the loop sleeps on kicks.
    var idlePollsBeforeSleep: Int { get }
    /// True once the loop must return.
    var isStopping: Bool { get }
    /// A session for free slot `slot` when a front-end is waiting (never waits long).
    func connect(_ slot: Int) -> BackendConnection?
    /// The fd that becomes readable when free slot `slot` has a front-end to connect.
    func connectDescriptor(_ slot: Int) -> Int32?
    /// How slot `slot`'s frames move.
    func forwarding(_ slot: Int) -> Forwarding
    /// Before each round of bursts.
    func beginRound()
    /// After slot `slot`'s burst.
    func afterBurst(of slot: Int)
    /// After each round of bursts.
    func endRound()
    /// Slot `slot`'s rings run for the first time: frames can flow.
    func started(_ slot: Int, _ session: BackendConnection) throws(VirtioError)
    /// Slot `slot` handled its control messages.
    func serviced(_ slot: Int, _ session: BackendConnection)
    /// Slot `slot`'s session ended, with `error` (nil: the loop is stopping). The slot is free.
    func ended(_ slot: Int, _ session: BackendConnection, _ error: VirtioError?)
    /// Fds besides sockets and kicks that bring work while the loop sleeps (a TAP).
    func wakeDescriptors() -> [Int32]
}

extension ServingHost {
    func beginRound() {}
    func afterBurst(of slot: Int) {}
    func endRound() {}
    func serviced(_ slot: Int, _ session: BackendConnection) {}
    func wakeDescriptors() -> [Int32] { [] }

    /// Serves until ``isStopping``: a burst on every running session each round; control
    /// messages and new front-ends when a round moved nothing (or every 256 rounds, since
    /// they are rare); after ``idlePollsBeforeSleep`` empty rounds, a sleep on kicks, sockets
    /// and ``wakeDescriptors()``. Control messages and traffic share the thread, so neither
    /// needs a lock.
    func serve() {
        var started = [Bool](repeating: false, count: sessions.count)
        var idlePolls = 0
        var rounds = 0
        var faultsSeen = cvs_guard_total_faults()
        while !isStopping {
            rounds &+= 1
            beginRound()
            // One load per round: did a front-end shrink its memory under us (a guarded
            // fault)? Each session's map names whose it was; a session that only receives
            // (a switch port) is caught here, not in its own bursts.
            let faults = cvs_guard_total_faults()
            if faults != faultsSeen {
                faultsSeen = faults
                for slot in 0..<sessions.count {
                    guard let session = sessions[slot] else { continue }
                    do throws(VirtioError) { try session.memory.checkTruncation() } catch { end(slot, error) }
                }
            }
            var handled = 0
            for slot in 0..<sessions.count {
                guard let session = sessions[slot], session.isRunning else { continue }
                do throws(VirtioError) {
                    handled &+= try session.dataPath.forward(forwarding(slot))
                } catch {
                    end(slot, error)
                }
                afterBurst(of: slot)
            }
            endRound()
            if handled == 0 || rounds & 255 == 0 {
                if serviceControl(&started) > 0 {
                    idlePolls = 0
                    continue
                }
            }
            if handled > 0 {
                idlePolls = 0
                continue
            }
            idlePolls &+= 1
            // Woken by a kick, a message or a front-end: poll again. Woken by the clock only
            // (it lets `isStopping` be seen): straight back to sleep, so idle costs no CPU.
            if idlePolls >= idlePollsBeforeSleep, sleepUntilWoken() { idlePolls = 0 }
        }
        for slot in 0..<sessions.count {
            guard let session = sessions[slot] else { continue }
            sessions[slot] = nil
            ended(slot, session, nil)
        }
    }

    /// Ends slot `slot`'s session with `error`.
    func end(_ slot: Int, _ error: VirtioError) {
        guard let session = sessions[slot] else { return }
        sessions[slot] = nil
        ended(slot, session, error)
    }

    /// Handles each session's pending control messages (a bounded number, see
    /// ``BackendConnection/handlePendingMessages()``) and connects front-ends to free slots.
    /// A session whose messages started its rings is announced before the loop looks at
    /// `isStopping` again, so a front-end whose set-up was acknowledged is always announced.
    /// Returns the messages and connections handled.
    private func serviceControl(_ started: inout [Bool]) -> Int {
        var handled = 0
        for slot in 0..<sessions.count {
            guard let session = sessions[slot] else {
                if let session = connect(slot) {
                    sessions[slot] = session
                    started[slot] = false
                    handled &+= 1
                }
                continue
            }
            do throws(VirtioError) {
                handled &+= try session.handlePendingMessages()
                if !started[slot], session.isRunning {
                    started[slot] = true
                    try self.started(slot, session)
                }
                serviced(slot, session)
            } catch {
                end(slot, error)
            }
        }
        return handled
    }

    /// Sleeps until a kick, a message, a front-end for a free slot or a wake descriptor (at
    /// most ``IdleSleep/milliseconds``). Returns false when nothing happened.
    private func sleepUntilWoken() -> Bool {
        var live: [BackendConnection] = []
        var hosts: [Int] = []
        var extra = wakeDescriptors()
        for slot in 0..<sessions.count {
            if let session = sessions[slot] {
                live.append(session)
                hosts.append(slot)
            } else if let descriptor = connectDescriptor(slot) {
                extra.append(descriptor)
            }
        }
        do throws(VirtioError) {
            return try IdleSleep.sleep(live, extra: extra) {
                for (session, slot) in zip(live, hosts) where forwarding(slot).hasWork(on: session.dataPath) { return true }
                return false
            }
        } catch {
            // poll(2) failed (an fd closed under it): look again rather than spin on it.
            MonotonicClock.sleep(milliseconds: 1)
            return true
        }
    }
}
