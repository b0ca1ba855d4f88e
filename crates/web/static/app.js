// glagent's one script: copy buttons, the agent name rule before submit,
// and live connection status on the Kubernetes clusters page.
"use strict";

document.querySelectorAll("[data-copy]").forEach((button) => {
  button.addEventListener("click", async () => {
    const text = document.getElementById(button.dataset.copy).textContent;
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select the text to copy it";
    }
  });
});

// The API's rule for agent names (RFC 1123 DNS label), said in words.
const agentNameRule = (name) => {
  if (name.length === 0) return "";
  if (name.length > 63) return "The name is too long: at most 63 characters.";
  if (!/^[a-z0-9-]+$/.test(name)) return "Use lowercase letters, digits and '-' only.";
  if (!/^[a-z0-9]/.test(name) || !/[a-z0-9]$/.test(name)) return "Start and end with a lowercase letter or digit.";
  return "";
};
document.querySelectorAll("[data-agent-name-form]").forEach((form) => {
  const input = form.querySelector("input[name=name]");
  const rule = form.querySelector("#agent-name-rule");
  const check = () => {
    const broken = agentNameRule(input.value);
    rule.textContent = broken;
    input.setCustomValidity(broken);
    return broken === "";
  };
  input.addEventListener("input", check);
  form.addEventListener("submit", (event) => {
    if (!check()) event.preventDefault();
  });
});

// Live connection status: the table's rows follow kas's view, pushed as
// Server-Sent Events (the browser reconnects by itself if kas goes away).
const table = document.querySelector("table[data-status-url]");
if (table) {
  const show = (agent) => {
    const row = table.querySelector(`tr[data-agent-id="${agent.id}"]`);
    if (!row) return;
    const badge = document.createElement("span");
    badge.className = `badge ${agent.status_class}`;
    badge.textContent = agent.status;
    row.querySelector("[data-field=status]").replaceChildren(badge);
    const contact = row.querySelector("[data-field=last_contact]");
    contact.textContent = agent.last_contact;
    contact.title = agent.last_contact_at;
    const version = row.querySelector("[data-field=version]");
    version.textContent = agent.version;
    if (agent.warning) {
      const warning = document.createElement("span");
      warning.className = "badge warning";
      warning.textContent = agent.warning;
      version.append(document.createElement("br"), warning);
    }
  };
  const events = new EventSource(table.dataset.statusUrl, { withCredentials: true });
  events.onmessage = (message) => {
    try {
      JSON.parse(message.data).agents.forEach(show);
    } catch {
      // A line this page cannot read; the next one will do.
    }
  };
}
