#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim

/// A plain OS thread for poll loops, which must never run on Swift's cooperative pool.
@usableFromInline package final class DedicatedThread: Sendable {
    private final class Box: @unchecked Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    private let handle: pthread_t

    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept by Linux).
    @usableFromInline package init(name: String, _ body: @escaping @Sendable () -> Void) throws(VirtioError) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, dedicatedThreadEntry, box)
        if result != 0 {
            Unmanaged<AnyObject>.fromOpaque(box).release()
            throw VirtioError.system("pthread_create(\(name))", errno: result)
        }
        _ = cvs_set_thread_name(thread, String(decoding: name.utf8.prefix(15), as: UTF8.self))
        handle = thread
    }

    /// True when called on this thread (joining it from itself would deadlock).
    @usableFromInline package var isCurrent: Bool { pthread_equal(handle, pthread_self()) != 0 }

    /// Waits for the thread's body to return. Call at most once, and not with ``detach()``.
    @usableFromInline package func join() {
        _ = pthread_join(handle, nil)
    }

    /// Lets the thread release its resources by itself when its body returns, for the one
    /// case where nobody can join it: the thread is ending itself. Instead of ``join()``.
    @usableFromInline package func detach() {
        _ = pthread_detach(handle)
    }

    /// Pins the calling thread to `cpu` (for poll loops that must not migrate).
    @usableFromInline package static func pinCurrentThread(to cpu: Int) throws(VirtioError) {
        _ = try SystemCall.run("sched_setaffinity(CPU \(cpu))", hint: "Is CPU \(cpu) online and allowed for this process?") {
            cvs_pin_current_thread(Int32(cpu))
        }
    }

    fileprivate static func run(_ opaque: UnsafeMutableRawPointer) {
        let box = Unmanaged<Box>.fromOpaque(opaque).takeRetainedValue()
        box.body()
    }
}

// A global function, not a closure: closures formed in top-level code are inferred @MainActor.
private func dedicatedThreadEntry(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    if let argument { DedicatedThread.run(argument) }
    return nil
}
