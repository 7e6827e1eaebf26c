"""A test environment: it answers every model turn that closes a brace with a fixed observation."""


class Recheck:
    stop = ["}"]

    def __init__(self, observation: str = "\nAgain: 2+2="):
        self.observation = observation

    def start(self, row):
        return {"answers": 0}

    def step(self, state, turn):
        if not turn.endswith("}"):
            return None
        state["answers"] += 1
        return self.observation

    def stats(self, state):
        return {"answers": float(state["answers"])}
