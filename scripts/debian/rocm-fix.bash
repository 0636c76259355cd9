# bash completion for rocm-fix and rocm-fix-run
_rocm_fix() {
  local cur=${COMP_WORDS[COMP_CWORD]} cmd=${COMP_WORDS[1]}
  if [ "${COMP_WORDS[0]##*/}" = rocm-fix-run ] || [ "$cmd" = run ]; then
    case "$cur" in
      -*) COMPREPLY=($(compgen -W "--retries --no-retry --no-presets --show --json --allow-cpu-fallback --report --preload --help" -- "$cur")) ;;
      *) COMPREPLY=($(compgen -c -- "$cur")) ;;
    esac
    return
  fi
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "run doctor triage kb preload kernel-params --help --version" -- "$cur"))
    return
  fi
  case "$cmd" in
    doctor) COMPREPLY=($(compgen -W "--sysfs --json --help" -- "$cur")) ;;
    triage) COMPREPLY=($(compgen -f -W "--json --help -" -- "$cur")) ;;
    kb) COMPREPLY=($(compgen -W "list show --json --help" -- "$cur")) ;;
    preload) COMPREPLY=($(compgen -W "enable disable status --root --library --help" -- "$cur")) ;;
    kernel-params) COMPREPLY=($(compgen -W "plan apply revert --root --dry-run --yes --json --help" -- "$cur")) ;;
  esac
}
complete -F _rocm_fix rocm-fix rocm-fix-run
