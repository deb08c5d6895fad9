# SPDX-License-Identifier: GPL-2.0-or-later
# bash completion for cowvol: commands, each command's options (read from
# its --help, so they never drift from the program), the store subcommands,
# and volume and snapshot names from the daemon (`cowvol list`, quietly
# nothing when it cannot be reached).  Installed by `make install` into
# share/bash-completion/completions/cowvol.

_cowvol_targets() { # names of volumes and VOLUME@SNAP, as list prints them
	"${1:-cowvol}" ${2:+--socket "$2"} list 2>/dev/null | awk 'NR > 1 && $1 != "No" { print $1 }'
}

_cowvol() {
	local cur=${COMP_WORDS[COMP_CWORD]} prog=${COMP_WORDS[0]} socket= cmd= i w
	COMPREPLY=()
	# the command: the first word after the global options
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		case $w in
		--socket) socket=${COMP_WORDS[i + 1]}; ((i++)) ;;
		--socket=*) socket=${w#--socket=} ;;
		-*) ;;
		*) cmd=$w; break ;;
		esac
	done
	if [ -z "$cmd" ]; then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "--socket --help --version" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$("$prog" --help 2>/dev/null |
				awk '/^  [a-z]+ / || /^  [a-z]+$/ { print $1 }' | sort -u)" -- "$cur"))
		fi
		return 0
	fi
	if [ "$cmd" = store ] && [ $((i + 1)) = "$COMP_CWORD" ]; then
		COMPREPLY=($(compgen -W "create info check dump view" -- "$cur"))
		return 0
	fi
	if [[ $cur == -* ]]; then
		local help
		if [ "$cmd" = store ]; then
			help=$("$prog" store "${COMP_WORDS[i + 1]}" --help 2>/dev/null)
		else
			help=$("$prog" "$cmd" --help 2>/dev/null)
		fi
		COMPREPLY=($(compgen -W "--help $(grep -oE -- '--[a-z][a-z-]*' <<<"$help" | sort -u)" -- "$cur"))
		return 0
	fi
	case $cmd in
	store) COMPREPLY=($(compgen -f -- "$cur")) ;;
	add) COMPREPLY=($(compgen -f -- "$cur")) ;;
	create | help | status) ;;
	*) COMPREPLY=($(compgen -W "$(_cowvol_targets "$prog" "$socket")" -- "$cur")) ;;
	esac
	return 0
}
complete -F _cowvol cowvol
