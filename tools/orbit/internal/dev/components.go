package dev

// Components are the services `orbit dev` runs, in start order. Each service
// adds itself here when it lands (docs/development.md, "Adding a service").
func Components() []Component {
	return nil
}
