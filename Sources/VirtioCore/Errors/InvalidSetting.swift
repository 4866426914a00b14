/// A value the caller supplied that is out of range: which one, what it was, what is allowed.
public struct InvalidSetting: Sendable, Equatable, CustomStringConvertible {
    /// The setting or argument, as the API names it (`queueSize`, `socketPath`, …).
    public let field: String
    /// The value given.
    public let value: String
    /// What is allowed, as a sentence fragment ("a power of two from 64 to 32768").
    public let requirement: String

    /// Creates the description of a bad value.
    public init(field: String, value: String, requirement: String) {
        self.field = field
        self.value = value
        self.requirement = requirement
    }

    public var description: String {
        "\(field) \(value) is not allowed: \(requirement)."
    }
}
