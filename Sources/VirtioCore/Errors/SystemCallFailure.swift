import SystemPackage

/// A system call that failed: which, with what errno, and what to check.
public struct SystemCallFailure: Sendable, Equatable, CustomStringConvertible {
    /// The call and its subject, such as `open(/tmp/x.pcap)`.
    public let operation: String
    /// What the call left in errno.
    public let errno: Errno
    /// What to check or do (may be empty).
    public let advice: String

    /// Creates the description of a failed call.
    public init(operation: String, errno: Errno, advice: String = "") {
        self.operation = operation
        self.errno = errno
        self.advice = advice
    }

    public var description: String {
        let tail = advice.isEmpty ? "" : " \(advice)"
        return "\(operation) failed: \(errno.description) (errno \(errno.rawValue)).\(tail)"
    }
}
