import VirtioCore
import VirtioUserIP
import XCTest

/// Ports belong to an interface: two tenants' interfaces in one process may each listen on the
/// same port, while one interface cannot bind a port twice. (lwIP alone checks ports across
/// every interface.)
final class IPPortTests: XCTestCase {
    private func twoInterfaces() -> (InterfaceLink, InterfaceLink) {
        let a = InterfaceLink(discardingOutputWith: MACAddress(0x02, 0, 0, 0, 0x10, 1), mtu: 1500)
        let b = InterfaceLink(discardingOutputWith: MACAddress(0x02, 0, 0, 0, 0x10, 2), mtu: 1500)
        let attached = LwIPCore.withCore {
            a.attach(.init(address: IPAddress(203, 0, 113, 1), prefixLength: 25))
                && b.attach(.init(address: IPAddress(203, 0, 113, 129), prefixLength: 25))
        }
        XCTAssertTrue(attached)
        addTeardownBlock { LwIPCore.withCore { a.detach(); b.detach() } }
        return (a, b)
    }

    func testTwoInterfacesListenOnOnePortAndOneInterfaceCannotTwice() throws {
        let (a, b) = twoInterfaces()
        let first = try LwIPCore.withCore { () throws(IPError) in try TCPListener(port: 8443, backlog: 4, link: a) }
        let other = try LwIPCore.withCore { () throws(IPError) in try TCPListener(port: 8443, backlog: 4, link: b) }
        XCTAssertThrowsError(try LwIPCore.withCore { () throws(IPError) in try TCPListener(port: 8443, backlog: 4, link: a) }) {
            XCTAssertEqual($0 as? IPError, .addressInUse(port: 8443))
        }
        first.close()
        let again = try LwIPCore.withCore { () throws(IPError) in try TCPListener(port: 8443, backlog: 4, link: a) }
        again.close()
        other.close()
    }

    func testTwoInterfacesBindOneUDPPortAndOneInterfaceCannotTwice() throws {
        let (a, b) = twoInterfaces()
        let first = try LwIPCore.withCore { () throws(IPError) in try UDPSocket(port: 5353, queueLimit: 4, link: a) }
        let other = try LwIPCore.withCore { () throws(IPError) in try UDPSocket(port: 5353, queueLimit: 4, link: b) }
        XCTAssertThrowsError(try LwIPCore.withCore { () throws(IPError) in try UDPSocket(port: 5353, queueLimit: 4, link: a) }) {
            XCTAssertEqual($0 as? IPError, .addressInUse(port: 5353))
        }
        // An ephemeral port is the interface's too.
        let ephemeral = try LwIPCore.withCore { () throws(IPError) in try UDPSocket(port: 0, queueLimit: 4, link: a) }
        XCTAssertNotEqual(ephemeral.port, 0)
        XCTAssertThrowsError(try LwIPCore.withCore { () throws(IPError) in try UDPSocket(port: ephemeral.port, queueLimit: 4, link: a) })
        for socket in [first, other, ephemeral] { socket.close() }
    }
}
