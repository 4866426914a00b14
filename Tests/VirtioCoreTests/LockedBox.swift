import Synchronization

/// A value handed from another thread to the test thread.
final class LockedBox<Value: Sendable>: Sendable {
    private let storage: Mutex<Value?>

    init() { storage = Mutex(nil) }

    func set(_ value: Value) { storage.withLock { $0 = value } }

    var value: Value? { storage.withLock { $0 } }
}
