"""vLLM (or SGLang) serving LoRA adapters on a shared base: a version is its adapter folder, loaded at run time under
the version's name with `POST /v1/load_lora_adapter` and unloaded with `/v1/unload_lora_adapter`; nothing is merged
and no GGUF is made. The server must run with `--enable-lora` (`--max-lora-rank` at least the adapters' rank,
`--max-loras` at least the versions served at once) and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, which vLLM warns is
not for untrusted networks: keep its port private. The engine has no alias of its own, so the alias is the adapter
loaded once more under the alias's name; the project's records say which version is live.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl.deploy.engines import EngineUnavailable, RegistrationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VllmEngine:
    url: str  # OPENAI_BASE_URL, ending in /v1
    api_key: str = "no-key"
    timeout_seconds: float = 30.0
    kind: str = "vllm"

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        try:
            return httpx.post(f"{self.url.rstrip('/')}/{path}", json=body, timeout=max(self.timeout_seconds, 60.0),
                              headers={"Authorization": f"Bearer {self.api_key}"})
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise EngineUnavailable(f"vLLM at {self.url} is unreachable ({exc}); nothing changed.") from exc

    def load(self, name: str, adapter_path: str) -> None:
        response = self._post("load_lora_adapter", {"lora_name": name, "lora_path": adapter_path})
        if response.status_code == 200 or "already been loaded" in response.text:
            logger.info("vLLM at %s: loaded %s as %s", self.url, adapter_path, name)
            return
        raise RegistrationError(f"vLLM at {self.url} refused to load {name} from {adapter_path}: HTTP {response.status_code} {response.text[:300]}")

    def unload(self, name: str) -> None:
        response = self._post("unload_lora_adapter", {"lora_name": name})
        if response.status_code not in (200, 404):  # 404: it was not loaded, which is what unloading wants
            raise RegistrationError(f"vLLM at {self.url} refused to unload {name}: HTTP {response.status_code} {response.text[:300]}")

    def register(self, version: Any, chat_family: str, template: str, parameters: dict[str, Any]) -> dict[str, str]:
        adapter = Path(version.adapter_path or "")
        if not (adapter / "adapter_config.json").is_file():
            raise RegistrationError(f"{version.ollama_name} has no LoRA adapter folder ({version.adapter_path!r}); vLLM serves the adapter.")
        self.load(version.ollama_name, str(adapter))
        return {}

    def point_alias(self, version: Any, alias: str) -> None:
        self.unload(alias)
        self.load(alias, version.adapter_path)

    def retire(self, version: Any) -> None:
        self.unload(version.ollama_name)
