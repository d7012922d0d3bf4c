"""Why an AMQP connection or channel closed, in words, and whether it is worth reconnecting.

pika hands a closed connection's or channel's reason over as an exception object: ``ConnectionClosedByBroker``
(reply code and text: 320 CONNECTION_FORCED when an admin closes it or the node shuts down), ``StreamLostError``
(the socket died: a broker killed or restarted), ``ChannelClosedByBroker`` (the broker refused an operation: 404, 406,
...), ``ConnectionClosedByClient`` / ``ChannelClosedByClient`` (we closed it).
"""

from __future__ import annotations

import pika.exceptions as pexc

# Connection-level reply codes after which the same request works on a new connection: connection-forced,
# frame-error, channel-error, unexpected-frame, resource-error.
_TRANSIENT_CODES = {320, 501, 504, 505, 506}


def connection_dropped(reason: BaseException) -> bool:
    """True when the connection went away under us (restart, network, admin): reconnecting is the remedy. False
    when the broker refused what we did (a missing queue, a precondition, credentials), which a new connection
    would not change."""
    if isinstance(reason, pexc.ConnectionClosedByBroker):
        return reason.reply_code in _TRANSIENT_CODES
    if isinstance(reason, pexc.ChannelClosedByBroker):
        return False
    if isinstance(reason, pexc.ChannelClosedByClient | pexc.ConnectionClosedByClient):
        return False
    return isinstance(reason, pexc.AMQPConnectionError | pexc.ChannelWrongStateError | pexc.ChannelClosed | OSError)


def describe_close(reason: BaseException) -> str:
    """One line on what happened, e.g. "the broker closed the connection (320 CONNECTION_FORCED - Closed via
    management plugin)" or "the connection to the broker was lost (StreamLostError: ...)"."""
    if isinstance(reason, pexc.ConnectionClosedByBroker):
        return f"the broker closed the connection ({reason.reply_code} {reason.reply_text})"
    if isinstance(reason, pexc.ChannelClosedByBroker):
        return f"the broker closed the channel ({reason.reply_code} {reason.reply_text})"
    if isinstance(reason, pexc.StreamLostError):
        return "the connection to the broker was lost (the broker stopped, restarted or the network dropped)"
    if isinstance(reason, pexc.ConnectionClosedByClient | pexc.ChannelClosedByClient):
        return "the connection was closed by qdeck"
    text = str(reason).strip() or type(reason).__name__
    return f"the connection closed ({type(reason).__name__}: {text})"[:300]
