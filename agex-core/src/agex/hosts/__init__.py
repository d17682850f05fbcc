"""Where an agent's loop runs. A host gets an invocation (which agent, which task, which
arguments, which session) and a sink for events and tokens, and runs the whole loop.

The types live in :mod:`agex.protocols`; they are named here too, where hosts have always
found them.
"""

from agex.protocols import MAX_SESSION as MAX_SESSION
from agex.protocols import Host as Host
from agex.protocols import Invocation as Invocation
from agex.protocols import Sink as Sink
from agex.protocols import check_session as check_session
