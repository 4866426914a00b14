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
enum ReadinessWait {
    private final class Waiter: @unchecked Sendable {
        let fired = Atomic<Bool>(false)
        // Written before either event can fire, read once after `fired` was won.
        var continuation: CheckedContinuation<Void, Never>?
        var source: DispatchSourceRead?

        func fire() {
            guard !fired.exchange(true, ordering: .acquiringAndReleasing) else { return }
            source?.cancel()
            continuation?.resume()
        }
    }

    /// Returns when `descriptor` is readable (a negative one never is), after `milliseconds`,
    /// or when the task is cancelled.
    static func wait(descriptor: Int32, milliseconds: Int) async {
        let waiter = Waiter()
        let queue = DispatchQueue.global()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                waiter.continuation = continuation
                if descriptor >= 0 {
                    let source = DispatchSource.makeReadSource(fileDescriptor: descriptor, queue: queue)
                    waiter.source = source
                    source.setEventHandler { waiter.fire() }
                    source.resume()
                }
                queue.asyncAfter(deadline: .now() + .milliseconds(milliseconds)) { waiter.fire() }
            }
        } onCancel: {
            waiter.fire()
        }
    }
}
