"""Drop-in sessions for agent frameworks (optional extras).

Each adapter lives in its own module and imports its framework only there, so
``import coda_session`` never imports a framework: ``from coda_session.adapters.openai_agents
import CodaSession`` needs ``pip install "coda-session[openai-agents]"``, ``from
coda_session.adapters.langchain import CodaChatMessageHistory`` ``pip install
"coda-session[langchain]"``.
"""
