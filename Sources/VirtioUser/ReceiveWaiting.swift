import Dispatch
import Synchronization
import VirtioCore

/// Interrupt mode: receiving that sleeps on the back-end's call notification instead of
/// polling, for threads that must not burn a core while idle and for Swift concurrency.
extension VirtioUserDevice {
    /// Receives on pair `queue` like ``receive(into:queue:)``, but when nothing has arrived
    /// it asks the back-end for a call notification and sleeps on it, for at most
    /// `timeoutMilliseconds` in all. Returns the buffers appended; 0 when the time ran out
    /// (or `queue` does not exist). While the link is down it waits too, in short naps.
    ///
    /// A data-path call, like ``receive(into:queue:)``: from the pair's thread.
    public func receive(into burst: PacketBurst, queue: Int = 0, timeoutMilliseconds: Int) -> Int {
        guard let queuePair = pair(queue) else { return 0 }
        let deadline = MonotonicClock.deadline(milliseconds: timeoutMilliseconds, after: MonotonicClock.nanoseconds())
        while true {
            let received = receive(into: burst, queue: queue)
            if received > 0 { return received }
            let now = MonotonicClock.nanoseconds()
            guard now < deadline else { return 0 }
            // At most 100 ms per sleep, so a session replaced meanwhile is noticed.
            let slice = Int32(min(100, max(1, (deadline - now) / 1_000_000)))
            switch queuePair.armReceiveNotification() {
            case .framesWaiting:
                continue
            case .notRunning:
                MonotonicClock.sleep(milliseconds: Int(min(slice, 10)))
            case .armed:
                _ = try? Poll.waitReadable(queuePair.rxCall.descriptor.raw, milliseconds: slice)
                queuePair.disarmReceiveNotification()
            }
        }
    }

    /// Received bursts on pair `queue` as an `AsyncSequence`, for Swift concurrency: while
    /// nothing arrives the task is suspended on the back-end's call notification (never
    /// polling on the cooperative pool), and it resumes as frames come in.
    ///
    /// Each element is the same `PacketBurst` (of `capacity` buffers), refilled: use its
    /// frames before asking for the next burst, and transmit or release the ones you keep
    /// (through pair `queue`); whatever is still in it then goes back to the pool, as it does
    /// when the iterator is dropped (a loop left early). The sequence ends when the device is
    /// stopped or the task is cancelled. One iteration at a
    /// time per pair, and not while another thread polls the pair.
    ///
    /// ```swift
    /// for await burst in device.receivedBursts() {
    ///     for i in 0..<burst.count { handle(burst[i]) }
    /// }
    /// ```
    public func receivedBursts(queue: Int = 0, capacity: Int = 32) -> ReceivedBursts {
        ReceivedBursts(device: self, queue: queue, capacity: capacity)
    }

    /// What ``armReceive(queue:)`` found.
    package enum ReceiveArm: Equatable {
        /// The back-end will make `descriptor` readable when frames arrive.
        case armed(descriptor: Int32)
        case framesWaiting
        /// The pair is not running (link down, or no such pair).
        case notRunning
    }

    /// Interrupt mode in two halves, for a caller that serialises pair `queue`'s data path
    /// with a lock of its own (VirtioUserIP holds lwIP's core lock): arm with the lock held,
    /// sleep on the descriptor without it, then ``disarmReceive(queue:)`` with it again.
    package func armReceive(queue: Int) -> ReceiveArm {
        guard let queuePair = pair(queue) else { return .notRunning }
        switch queuePair.armReceiveNotification() {
        case .armed: return .armed(descriptor: queuePair.rxCall.descriptor.raw)
        case .framesWaiting: return .framesWaiting
        case .notRunning: return .notRunning
        }
    }

    /// Back to polling after a wait that ``armReceive(queue:)`` armed.
    package func disarmReceive(queue: Int) {
        pair(queue)?.disarmReceiveNotification()
    }

    /// True between ``start()`` and ``stop()`` (the link may be down meanwhile).
    var isStarted: Bool { control.withLock { $0.started } }
}

/// The bursts a queue pair receives, as an `AsyncSequence`; see
/// ``VirtioUserDevice/receivedBursts(queue:capacity:)``.
public struct ReceivedBursts: AsyncSequence {
    public typealias Element = PacketBurst
    public typealias Failure = Never

    let device: VirtioUserDevice
    let queue: Int
    let capacity: Int

    public func makeAsyncIterator() -> Iterator {
        Iterator(holder: BurstHolder(device: device, queue: queue, burst: PacketBurst(capacity: capacity)))
    }

    /// Owns the iterator's burst: what is left in it goes back to the pool when the iterator
    /// is dropped.
    final class BurstHolder {
        let device: VirtioUserDevice
        let queue: Int
        let burst: PacketBurst

        init(device: VirtioUserDevice, queue: Int, burst: PacketBurst) {
            self.device = device
            self.queue = queue
            self.burst = burst
        }

        deinit { device.release(burst, queue: queue) }
    }

    /// Waits for and returns the next burst.
    public struct Iterator: AsyncIteratorProtocol {
        let holder: BurstHolder
        var device: VirtioUserDevice { holder.device }
        var queue: Int { holder.queue }
        var burst: PacketBurst { holder.burst }

        public mutating func next(isolation actor: isolated (any Actor)?) async -> PacketBurst? {
            await nextBurst(isolation: actor)
        }

        public mutating func next() async -> PacketBurst? {
            await nextBurst(isolation: nil)
        }

        /// Runs on the caller's isolation, so the burst never crosses into another domain.
        private func nextBurst(isolation actor: isolated (any Actor)?) async -> PacketBurst? {
            device.release(burst, queue: queue)
            guard let pair = device.pair(queue) else { return nil }
            while !Task.isCancelled {
                if device.receive(into: burst, queue: queue) > 0 { return burst }
                switch pair.armReceiveNotification() {
                case .framesWaiting:
                    continue
                case .notRunning:
                    guard device.isStarted else { return nil }
                    await ReadinessWait.wait(descriptor: -1, milliseconds: 10)
                case .armed:
                    await ReadinessWait.wait(descriptor: pair.rxCall.descriptor.raw, milliseconds: 100)
                    pair.disarmReceiveNotification()
                }
            }
            return nil
        }
    }
}

/// Suspends a task until a descriptor is readable or time runs out, without blocking a
/// thread: a Dispatch read source and a deadline race, and the first one resumes the task.
package enum ReadinessWait {
    /// Whichever comes first of readiness, the deadline and cancellation resumes the task,
    /// once. Cancellation can come before the continuation exists (its handler runs on the
    /// cancelling thread, at any moment), so both live under one lock: a wait that was
    /// cancelled before it began resumes at once instead of never.
    private final class Waiter: Sendable {
        /// Dispatch sources are thread-safe, but not marked `Sendable`.
        struct Source: @unchecked Sendable {
            let read: DispatchSourceRead
        }
        private struct State {
            var continuation: CheckedContinuation<Void, Never>?
            var source: Source?
            var fired = false
        }
        private let state = Mutex(State())

        /// Hands over the continuation; false when an event already fired (the caller resumes).
        func install(_ continuation: CheckedContinuation<Void, Never>) -> Bool {
            state.withLock { state in
                guard !state.fired else { return false }
                state.continuation = continuation
                return true
            }
        }

        /// Keeps the read source for cancelling; false when an event already fired.
        func attach(_ source: Source) -> Bool {
            state.withLock { state in
                guard !state.fired else { return false }
                state.source = source
                return true
            }
        }

        func fire() {
            let (continuation, source) = state.withLock { state -> (CheckedContinuation<Void, Never>?, Source?) in
                guard !state.fired else { return (nil, nil) }
                state.fired = true
                defer { state.continuation = nil; state.source = nil }
                return (state.continuation, state.source)
            }
            source?.read.cancel()
            continuation?.resume()
        }
    }

    /// Returns when `descriptor` is readable (a negative one never is), after `milliseconds`,
    /// or when the task is cancelled.
    package static func wait(descriptor: Int32, milliseconds: Int) async {
        let waiter = Waiter()
        let queue = DispatchQueue.global()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                guard waiter.install(continuation) else { return continuation.resume() }
                if descriptor >= 0 {
                    let source = DispatchSource.makeReadSource(fileDescriptor: descriptor, queue: queue)
                    source.setEventHandler { waiter.fire() }
                    // Cancelled first when the wait is already over; resumed either way, since
                    // Dispatch must not release a source that was never activated.
                    if !waiter.attach(Waiter.Source(read: source)) { source.cancel() }
                    source.resume()
                }
                queue.asyncAfter(deadline: .now() + .milliseconds(milliseconds)) { waiter.fire() }
            }
        } onCancel: {
            waiter.fire()
        }
    }
}
